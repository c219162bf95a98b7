"""A real local Ethereum node (anvil, ``scripts/install_anvil.sh``) for the on-chain tests, and what
the tests do on it: deploy the test tokens of ``contracts/compiled.json``, transfer between anvil's
funded accounts, reorganize the chain.

Anvil's accounts are unlocked, so ``eth_sendTransaction`` needs no signing; arguments are
ABI-encoded here for the few types the test contracts take. A test module shares one node::

    anvil_node = anvil_node_fixture()  # module scope; a test takes ``anvil_node`` (an ``Anvil``)

and a test that stops, restarts or reorganizes a node of its own takes ``new_anvil``::

    new_anvil = new_anvil_fixture()    # new_anvil() starts one, new_anvil(start=False) only picks its port
"""

from __future__ import annotations

import json
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import httpx
import pytest

from runners.ports import free_port
from tests.support.paths import ROOT

ANVIL = ROOT / ".tools" / "anvil" / "anvil"
COMPILED = ROOT / "contracts" / "compiled.json"
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


class AnvilError(RuntimeError):
    """anvil is missing, did not start, or refused a request."""


def compiled_contracts() -> dict:
    return json.loads(COMPILED.read_text())["contracts"]


def _word(value: int) -> str:
    if not 0 <= value < 2**256:
        raise ValueError(f"{value} does not fit a uint256")
    return f"{value:064x}"


def encode_arguments(types: Sequence[str], values: Sequence) -> str:
    """ABI-encode arguments of the types the test contracts take (address, uintN, string); hex, no 0x."""
    heads, tails = [], []
    tail_offset = 32 * len(types)
    for kind, value in zip(types, values, strict=True):
        if kind == "address":
            heads.append(value.lower().removeprefix("0x").rjust(64, "0"))
        elif kind.startswith("uint"):
            heads.append(_word(int(value)))
        elif kind == "string":
            data = value.encode()
            padded = data.hex().ljust(64 * ((len(data) + 31) // 32), "0")
            heads.append(_word(tail_offset + sum(len(t) for t in tails) // 2))
            tails.append(_word(len(data)) + padded)
        else:
            raise ValueError(f"no encoding here for {kind}")
    return "".join(heads) + "".join(tails)


def call_data(contract: str, signature: str, *values) -> str:
    selector = compiled_contracts()[contract]["method_identifiers"][signature]
    types = signature[signature.index("(") + 1 : -1].split(",") if not signature.endswith("()") else []
    return "0x" + selector + encode_arguments(types, values)


class Anvil:
    """One anvil process on a free localhost port; ``start()`` it (``running_anvil`` does)."""

    def __init__(self, work_dir: Path, port: int | None = None, extra_args: Sequence[str] = ()):
        if not ANVIL.exists():
            raise AnvilError(f"anvil is not installed at {ANVIL}: run bash scripts/install_anvil.sh")
        self.work_dir = Path(work_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen | None = None
        self._http = httpx.Client(timeout=30)
        self._accounts: list[str] | None = None
        self.deployments: dict[str, str] = {}
        """Contract address -> the transaction that created it (and, for a token, minted its supply)."""

    def start(self, seconds: float = 30) -> Anvil:
        """Start anvil (again, on the same port: a fresh chain) and wait until it answers."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.work_dir / "anvil.log", "ab")
        self.process = subprocess.Popen(
            [str(ANVIL), "--host", "127.0.0.1", "--port", str(self.port), *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.work_dir,
        )
        log.close()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AnvilError(f"anvil exited with {self.process.returncode}; see {self.work_dir / 'anvil.log'}")
            try:
                self.rpc("eth_chainId")
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise AnvilError(f"anvil did not answer on {self.url} within {seconds:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        self._http.close()

    # -- raw JSON-RPC ------------------------------------------------------------------------------

    def rpc(self, method: str, *params):
        answer = self._http.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        body = answer.json()
        if "error" in body:
            raise AnvilError(f"{method}: {body['error']}")
        return body["result"]

    def rpc_batch(self, calls: Sequence[tuple[str, list]]) -> list:
        """The results of several requests sent as one JSON-RPC batch, in their order."""
        batch = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        answers = sorted(self._http.post(self.url, json=batch).json(), key=lambda answer: answer["id"])
        for answer in answers:
            if "error" in answer:
                raise AnvilError(f"{calls[answer['id']][0]}: {answer['error']}")
        return [answer["result"] for answer in answers]

    @property
    def accounts(self) -> list[str]:
        """anvil's ten funded, unlocked accounts (lower case)."""
        if self._accounts is None:
            self._accounts = [a.lower() for a in self.rpc("eth_accounts")]
        return self._accounts

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def block(self, number_or_tag: int | str) -> dict:
        tag = hex(number_or_tag) if isinstance(number_or_tag, int) else number_or_tag
        return self.rpc("eth_getBlockByNumber", tag, False)

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", hex(blocks))

    def receipt(self, transaction_hash: str, seconds: float = 10) -> dict:
        """The receipt of a successful transaction, waiting for it: automine mines soon after
        eth_sendTransaction returns, not always before."""
        deadline = time.monotonic() + seconds
        while (receipt := self.rpc("eth_getTransactionReceipt", transaction_hash)) is None:
            if time.monotonic() > deadline:
                raise AnvilError(f"no receipt for {transaction_hash} after {seconds:.0f} s: not mined")
            time.sleep(0.01)
        if receipt["status"] != "0x1":
            raise AnvilError(f"transaction {transaction_hash} reverted")
        return receipt

    def send(self, sender: str, to: str | None, data: str, mined: bool = True) -> str:
        """Send a transaction from an unlocked account; with automine it is in a block on return."""
        transaction = {"from": sender, "data": data, **({"to": to} if to else {})}
        transaction_hash = self.rpc("eth_sendTransaction", transaction)
        if mined:
            self.receipt(transaction_hash)
        return transaction_hash

    # -- the test contracts ------------------------------------------------------------------------

    def deploy(
        self, contract: str, types: Sequence[str] = (), values: Sequence = (), deployer: str | None = None
    ) -> str:
        bytecode = compiled_contracts()[contract]["bytecode"]
        transaction_hash = self.send(deployer or self.accounts[0], None, bytecode + encode_arguments(types, values))
        address = self.receipt(transaction_hash)["contractAddress"].lower()
        self.deployments[address] = transaction_hash
        return address

    def deploy_token(
        self,
        name: str = "Test Token",
        symbol: str = "TST",
        decimals: int = 18,
        supply: int = 10**30,
        deployer: str | None = None,
    ) -> str:
        """A ``TestToken`` whose whole supply is minted to ``deployer`` (account 0); its address."""
        return self.deploy(
            "TestToken", ("string", "string", "uint8", "uint256"), (name, symbol, decimals, supply), deployer
        )

    def deploy_collectible(self, deployer: str | None = None) -> str:
        return self.deploy("TestCollectible", deployer=deployer)

    def transfer(self, token: str, sender: str, to: str, value: int, mined: bool = True) -> str:
        return self.send(sender, token, call_data("TestToken", "transfer(address,uint256)", to, value), mined)

    def approve(self, token: str, owner: str, spender: str, value: int) -> str:
        return self.send(owner, token, call_data("TestToken", "approve(address,uint256)", spender, value))

    def transfer_from(self, token: str, spender: str, owner: str, to: str, value: int) -> str:
        data = call_data("TestToken", "transferFrom(address,address,uint256)", owner, to, value)
        return self.send(spender, token, data)

    def mint_collectible(self, collectible: str, sender: str, to: str, token_id: int) -> str:
        return self.send(sender, collectible, call_data("TestCollectible", "mint(address,uint256)", to, token_id))

    def balance_of(self, token: str, holder: str) -> int:
        data = call_data("TestToken", "balanceOf(address)", holder)
        return int(self.rpc("eth_call", {"to": token, "data": data}, "latest"), 16)

    def transfers_in_one_block(self, transfers: Sequence[tuple[str, str, str, int]]) -> list[str]:
        """(token, sender, to, value) transfers mined together in one new block; their hashes in order."""
        self.rpc("evm_setAutomine", False)
        try:
            hashes = [self.transfer(token, sender, to, value, mined=False) for token, sender, to, value in transfers]
            self.mine()
        finally:
            self.rpc("evm_setAutomine", True)
        for transaction_hash in hashes:
            self.receipt(transaction_hash)
        return hashes

    # -- reorganizations ---------------------------------------------------------------------------

    def reorg(self, depth: int, replacements: Sequence[tuple[str, str, str, int, int]] = ()) -> None:
        """Replace the newest ``depth`` blocks with as many new ones (new hashes, same numbers).

        ``replacements`` are (token, sender, to, value, offset) transfers for the new blocks, offset 0
        being the first new block. anvil's ``anvil_reorg`` does it in one step; a node without it is
        rewound with ``evm_snapshot``/``evm_revert`` from a snapshot taken ``depth`` blocks ago,
        which needs ``snapshot_before`` (see ``reorg_from_snapshot``)."""
        pairs = [
            [{"from": sender, "to": token, "data": call_data("TestToken", "transfer(address,uint256)", to, value)}, at]
            for token, sender, to, value, at in replacements
        ]
        self.rpc("anvil_reorg", depth, pairs)

    def snapshot(self) -> str:
        return self.rpc("evm_snapshot")

    def reorg_from_snapshot(
        self, snapshot_id: str, replacements: Sequence[tuple[str, str, str, int]] = (), height: int | None = None
    ) -> None:
        """Rewind to a snapshot, then mine the replacement transfers and empty blocks up to ``height``
        (default: the height before the rewind), so the new branch is as long as the old one."""
        height = self.block_number() if height is None else height
        if not self.rpc("evm_revert", snapshot_id):
            raise AnvilError(f"evm_revert {snapshot_id}: no such snapshot")
        self.rpc("evm_increaseTime", 1)  # an empty block in the same second as the old would be the same block
        for token, sender, to, value in replacements:
            self.transfer(token, sender, to, value)
        if self.block_number() < height:
            self.mine(height - self.block_number())


@contextmanager
def running_anvil(work_dir: Path, extra_args: Sequence[str] = ()) -> Iterator[Anvil]:
    node = Anvil(work_dir, extra_args=extra_args).start()
    try:
        yield node
    finally:
        node.close()


def anvil_node_fixture(scope: str = "module"):
    """A pytest fixture named ``anvil_node``: one anvil for the module (or ``scope``), stopped after."""

    @pytest.fixture(scope=scope, name="anvil_node")
    def node(tmp_path_factory):
        with running_anvil(tmp_path_factory.mktemp("anvil")) as anvil:
            yield anvil

    return node


def new_anvil_fixture():
    """A pytest fixture named ``new_anvil``: a function giving nodes of the test's own, closed after it."""

    @pytest.fixture(name="new_anvil")
    def factory(tmp_path_factory):
        nodes: list[Anvil] = []

        def new(start: bool = True) -> Anvil:
            nodes.append(Anvil(tmp_path_factory.mktemp("anvil")))
            return nodes[-1].start() if start else nodes[-1]

        yield new
        for node in nodes:
            node.close()

    return factory
