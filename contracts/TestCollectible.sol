// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// Emits ERC-721's Transfer, whose topic0 is ERC-20's but whose token id is a fourth topic and
/// whose data is empty: a log that a query for ERC-20 transfers by topic0 also returns, and that
/// a reader of ERC-20 transfers must set aside rather than misread.
contract TestCollectible {
    mapping(uint256 => address) public ownerOf;

    event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);

    function mint(address to, uint256 tokenId) external {
        require(ownerOf[tokenId] == address(0), "TestCollectible: already minted");
        ownerOf[tokenId] = to;
        emit Transfer(address(0), to, tokenId);
    }
}
