"""ERC-20 token list: the shipped tokens, a user file that extends and overrides it, a hostile user
file as one clear error, and transfer values scaled to whole tokens exactly, rounded once."""

from __future__ import annotations

import csv
from decimal import Decimal, localcontext

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from io_connectors.instruments import canonical_asset, load_instruments
from io_connectors.tokens import (
    SHIPPED_TABLE,
    Token,
    TokensError,
    load_tokens,
    read_tokens_file,
    scaled_value,
    scaled_values,
    token_columns,
    tokens_digest,
)
from tests.support.chain_records import transfer, transfers_table

HEADER = "chain,address,symbol,decimals,canonical_asset"
USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
OTHER = "0x1f9840a85d5af5bf1d1762f925bdaddc4201f984"


def write(directory, content: str | bytes, name: str = "tokens.csv") -> str:
    path = directory / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return str(path)


def exact_reference(value: int, decimals: int) -> float:
    """value / 10**decimals by decimal arithmetic, exact, then one correctly rounded conversion."""
    with localcontext() as context:
        context.prec = 200
        return float(str(Decimal(value).scaleb(-decimals)))


# ---------------------------------------------------------------------- the shipped list


def test_the_shipped_list_holds_the_major_mainnet_tokens():
    tokens = load_tokens()
    expected = {
        "USDT": (USDT, 6, "USDT"),
        "USDC": ("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", 6, "USDC"),
        "WETH": (WETH, 18, "ETH"),
        "DAI": ("0x6b175474e89094c44da98b954eedeac495271d0f", 18, "DAI"),
        "WBTC": ("0x2260fac5e5542a773aa44fbcfedf7c193bc2c599", 8, "BTC"),
    }
    for symbol, (address, decimals, asset) in expected.items():
        assert tokens[("ethereum", address)] == Token("ethereum", address, symbol, decimals, asset)


def test_every_shipped_row_is_canonical_and_names_assets_as_the_instruments_do():
    with open(SHIPPED_TABLE, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == HEADER.split(",")
    instrument_assets = {asset for pair in load_instruments().values() for asset in pair}
    for row in rows:
        assert row["address"] == row["address"].lower() and row["chain"] == "ethereum", row
        assert canonical_asset(row["canonical_asset"]) == row["canonical_asset"], row
        assert row["canonical_asset"] in instrument_assets or row["canonical_asset"] == "DAI", row


def test_a_user_file_extends_and_overrides_the_list(tmp_path):
    path = write(
        tmp_path,
        f"{HEADER}\nethereum,{USDT},USD₮,6,usdt\nEthereum,{OTHER.upper().replace('0X', '0x')},UNI,18,UNI\n"
        f"polygon,{USDT},USDT,6,USDT\n",
    )
    tokens = load_tokens(path)
    assert tokens[("ethereum", USDT)].symbol == "USD₮"
    assert tokens[("ethereum", OTHER)] == Token("ethereum", OTHER, "UNI", 18, "UNI")
    assert ("polygon", USDT) in tokens and tokens[("ethereum", WETH)].decimals == 18
    assert load_tokens() == load_tokens(None) and ("ethereum", OTHER) not in load_tokens()
    assert tokens_digest(path) != tokens_digest() == tokens_digest(None)


HOSTILE = {
    "empty file": ("", "tokens.csv: empty, expected the header"),
    "no header": (f"ethereum,{USDT},USDT,6,USDT\n", "line 1: expected the header"),
    "other header": ("address,symbol,decimals\n", "line 1: expected the header"),
    "four fields": (f"{HEADER}\nethereum,{USDT},USDT,6\n", "line 2: expected chain,address"),
    "empty field": (f"{HEADER}\nethereum,{USDT}, ,6,USDT\n", "line 2: symbol is empty"),
    "short address": (f"{HEADER}\nethereum,{USDT[:-1]},USDT,6,USDT\n", "line 2: address"),
    "negative decimals": (f"{HEADER}\nethereum,{USDT},USDT,-1,USDT\n", "line 2: decimals '-1'"),
    "decimals over uint8": (f"{HEADER}\nethereum,{USDT},USDT,256,USDT\n", "line 2: decimals '256'"),
    "fractional decimals": (f"{HEADER}\nethereum,{USDT},USDT,6.0,USDT\n", "line 2: decimals"),
    "non-ASCII digits": (f"{HEADER}\nethereum,{USDT},USDT,٦,USDT\n", "line 2: decimals"),
    "bad chain": (f"{HEADER}\nmain net,{USDT},USDT,6,USDT\n", "line 2: chain 'main net'"),
    "conflicting duplicate": (
        f"{HEADER}\nethereum,{USDT},USDT,6,USDT\nethereum,{USDT.upper().replace('0X', '0x')},USDT,18,USDT\n",
        f"line 3: ethereum {USDT} is listed again as USDT (18 decimals, USDT), before as USDT (6 decimals, USDT)",
    ),
    "too long": (f"{HEADER}\nethereum,{USDT},{'A' * 101},6,USDT\n", "line 2: symbol is longer than 100"),
    "not UTF-8": (f"{HEADER}\n".encode() + b"ethereum,0x\xff,USDT,6,USDT\n", "line 2: not UTF-8"),
    "NUL byte": (f"{HEADER}\nethereum,{USDT},US\x00DT,6,USDT\n", "line 2: holds a NUL byte"),
    "control character": (f"{HEADER}\nethereum,{USDT},US\x1bDT,6,USDT\n", "line 2: symbol holds a control"),
    "unterminated quote": (f'{HEADER}\nethereum,"{USDT},USDT,6,USDT\n', "not CSV"),
    "huge line": (f"{HEADER}\nethereum,{USDT},{'A' * 200_000},6,USDT\n", "not CSV: field larger than field limit"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_user_file_is_one_clear_error(tmp_path, case):
    content, expected = HOSTILE[case]
    with pytest.raises(TokensError) as error:
        load_tokens(write(tmp_path, content))
    message = str(error.value)
    assert expected in message and "\n" not in message and message.startswith("tokens.csv")


@pytest.mark.parametrize("case", ["directory", "missing", "too large"])
def test_a_user_file_that_is_no_token_list_is_one_clear_error(tmp_path, case, monkeypatch):
    path = tmp_path / "tokens.csv"
    if case == "directory":
        path.mkdir()
    if case == "too large":
        monkeypatch.setattr("io_connectors.tokens.MAX_FILE_BYTES", 100)
        path.write_text(HEADER + "\n" + f"ethereum,{USDT},USDT,6,USDT\n" * 3)
    expected = {"directory": "is a directory", "missing": "no such file", "too large": "larger than"}[case]
    with pytest.raises(TokensError, match=expected):
        read_tokens_file(str(path))


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(st.lists(st.text(st.characters(codec="utf-8"), max_size=12), max_size=6), max_size=6).map(
            lambda rows: HEADER + "\n" + "\n".join(",".join(r) for r in rows)
        ),
    )
)
def test_any_user_file_reads_or_is_one_tokens_error(tmp_path_factory, content):
    path = write(tmp_path_factory.mktemp("any"), content)
    try:
        tokens = read_tokens_file(path)
    except TokensError as error:
        assert "\n" not in str(error) and str(error)
    else:
        for (chain, address), token in tokens.items():
            assert (chain, address) == (token.chain, token.address) and 0 <= token.decimals <= 255


# ---------------------------------------------------------------------- exact scaling


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.integers(0, 10**16), st.integers(0, 2**256 - 1)),
            st.one_of(st.integers(0, 30), st.integers(0, 255)),
        ),
        max_size=40,
    )
)
@example([(2**256 - 1, 0), (2**256 - 1, 18), (2**256 - 1, 255), (10**15 - 1, 22), (2**53 + 1, 0), (1, 255)])
@example([(9007199254740993, 0), (9007199254740993, 1), (123456789012345678901234567890, 18)])
def test_scaled_values_are_the_exact_quotient_rounded_once(pairs):
    values = pa.array([str(v) for v, _ in pairs], pa.string())
    decimals = np.array([d for _, d in pairs], np.int64)
    expected = [exact_reference(v, d) for v, d in pairs]
    assert scaled_values(values, decimals).tolist() == expected
    assert [scaled_value(str(v), d) for v, d in pairs] == expected


def test_rounding_once_differs_from_float_then_divide():
    # float(value) rounds first, then the division rounds again: one unit off in the last place.
    value, decimals = 871709100316485385285, 18  # 871.709100316485385285 WETH
    assert float(value) / 10**decimals != exact_reference(value, decimals)
    assert scaled_values(pa.array([str(value)]), decimals)[0] == exact_reference(value, decimals)


def test_scaled_values_take_one_decimals_for_all_and_give_nan_for_null():
    result = scaled_values(pa.array(["1500000", None, "0"]), 6)
    assert result[0] == 1.5 and np.isnan(result[1]) and result[2] == 0.0
    with pytest.raises(ValueError):
        scaled_values(pa.array(["1"]), 256)


def test_token_columns_name_and_scale_known_tokens_and_leave_others_null(tmp_path):
    rows = [
        (USDT, "1234567", "ethereum"),
        (WETH, str(10**18 + 1), "ethereum"),
        (OTHER, "5", "ethereum"),
        (USDT, "5", "polygon"),
        (WETH, str(2**256 - 1), "ethereum"),
    ]
    transfers = transfers_table(
        [transfer(token, 1, 2, int(value), 1, i, chain=chain) for i, (token, value, chain) in enumerate(rows)]
    )
    columns = token_columns(transfers, load_tokens())
    assert columns["symbol"].to_pylist() == ["USDT", "WETH", None, None, "WETH"]
    assert columns["decimals"].to_pylist() == [6, 18, None, None, 18]
    assert columns["canonical_asset"].to_pylist() == ["USDT", "ETH", None, None, "ETH"]
    assert columns["amount"].to_pylist() == [
        1.234567,
        exact_reference(10**18 + 1, 18),
        None,
        None,
        exact_reference(2**256 - 1, 18),
    ]
    user = write(tmp_path, f"{HEADER}\npolygon,{USDT},USDT,6,USDT\n")
    assert token_columns(transfers, load_tokens(user))["amount"].to_pylist()[3] == 5e-6
    assert token_columns(transfers, {})["amount"].null_count == len(rows)
