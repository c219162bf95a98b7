"""The on-chain computations' tables read from their files: tokens, labels and fusions."""

from __future__ import annotations

import pytest

from io_connectors.chain_tables import ChainTableError, chain_spec_from_files, parse_fusion
from transforms.chain_spec import Fusion

USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"


def test_shipped_tokens_labels_with_an_entity_and_fusions_make_the_spec(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "address,label,entity\n"
        "0x28C6c06298d514Db089934071355E5743bf21d60,Binance 14,Binance\n"
        "0x1111111111111111111111111111111111111111,Some contract,\n"
    )
    spec = chain_spec_from_files(None, str(labels), ["usdt=bars:binance:BTCUSDT", "ETH=bars_consolidated:ETH/USD"])
    assert spec.token("ethereum", USDT).decimals == 6
    assert spec.asset_tokens("ETH") >= {("ethereum", WETH)}
    assert spec.labels == (("0x28c6c06298d514db089934071355e5743bf21d60", "Binance"),)
    assert spec.fusions == (
        Fusion("USDT", "bars", "binance", "BTCUSDT"),
        Fusion("ETH", "bars_consolidated", "consolidated", "ETH/USD"),
    )


@pytest.mark.parametrize("text", ["USDT", "USDT=bars:binance", "USDT=quality:x:y", "=bars:a:b", "USDT=bars::X"])
def test_a_malformed_fusion_is_one_line(text):
    with pytest.raises(ChainTableError, match="expected ASSET=") as error:
        parse_fusion(text)
    assert "\n" not in str(error.value)


def test_a_fusion_of_an_asset_no_token_is_and_a_bad_tokens_file_are_one_line(tmp_path):
    with pytest.raises(ChainTableError, match="no known token is the asset 'NOPE'"):
        chain_spec_from_files(fusions=["NOPE=bars:binance:BTCUSDT"])
    bad = tmp_path / "tokens.csv"
    bad.write_text("chain,address,symbol,decimals,canonical_asset\nethereum,0x12,X,6,X\n")
    with pytest.raises(ChainTableError, match="line 2") as error:
        chain_spec_from_files(str(bad))
    assert "\n" not in str(error.value)
