"""ERC-20 tokens: each contract's symbol, decimals and canonical asset, and transfer values scaled
to whole tokens exactly.

A transfer's ``value`` is an integer in the token's smallest unit; ``decimals`` says where the
point goes (USDT has 6, WETH 18). The shipped list (``tokens.csv``,
``chain,address,symbol,decimals,canonical_asset``) holds major mainnet tokens; a user file in the
same layout (``--tokens FILE``) extends or overrides it, as ``--instruments`` does for trading
pairs (``io_connectors.instruments``). Canonical assets are spelled as the instruments table
spells them (WETH is ETH, WBTC is BTC), so token flows and trades name an asset alike. A hostile
user file is one ``TokensError`` whose one-line message names the file and line.

Scaling is exact and rounded once: value / 10**decimals is the float nearest the exact quotient,
never float(value) / 10**decimals, which rounds twice and loses digits past 2**53.

Beam-free and cheap to import: the command line checks ``--tokens`` without Beam.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from io_connectors.instruments import canonical_asset
from io_connectors.user_files import check_text_fields, csv_rows, read_user_text, shown

SHIPPED_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokens.csv")
COLUMNS = ["chain", "address", "symbol", "decimals", "canonical_asset"]
MAX_FIELD_CHARS = 100
MAX_DECIMALS = 255  # ERC-20's decimals() is a uint8
MAX_FILE_BYTES = 64 * 1024 * 1024  # far beyond any token list; guards against a wrong file
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_CHAIN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class TokensError(ValueError):
    """A user token list that cannot be used; the message is one line naming file and line."""


@dataclass(frozen=True)
class Token:
    chain: str
    address: str
    """Lower-case 0x + 40 hex digits."""
    symbol: str
    """As the token's contract spells it, e.g. USDC, stETH."""
    decimals: int
    canonical_asset: str
    """The asset as the instruments table names it, e.g. ETH for WETH."""


TokenTable = dict  # (chain, address) -> Token


# ---------------------------------------------------------------------- the table


def _rows_of(text: str, name: str) -> TokenTable:
    table: TokenTable = {}
    for line, values in csv_rows(text, name, COLUMNS, TokensError):
        chain, address, symbol, decimals, asset = values
        check_text_fields(name, line, COLUMNS, values, TokensError, MAX_FIELD_CHARS)
        if not _CHAIN.fullmatch(chain.lower()):
            raise TokensError(f"{name} line {line}: chain {shown(chain)} is not a chain name, e.g. ethereum")
        if not _ADDRESS.fullmatch(address):
            raise TokensError(f"{name} line {line}: address {shown(address)} is not 0x and 40 hex digits")
        if not (decimals.isascii() and decimals.isdigit() and int(decimals) <= MAX_DECIMALS):
            raise TokensError(f"{name} line {line}: decimals {shown(decimals)} is not a whole number 0 to 255")
        token = Token(chain.lower(), address.lower(), symbol, int(decimals), canonical_asset(asset))
        key = (token.chain, token.address)
        if table.get(key, token) != token:
            before = table[key]
            raise TokensError(
                f"{name} line {line}: {token.chain} {token.address} is listed again as {token.symbol} "
                f"({token.decimals} decimals, {token.canonical_asset}), before as {before.symbol} "
                f"({before.decimals} decimals, {before.canonical_asset})"
            )
        table[key] = token
    return table


def read_tokens_file(path: str) -> TokenTable:
    """A user's token list as {(chain, address): Token}, or one TokensError."""
    text, name = read_user_text(path, TokensError, MAX_FILE_BYTES, "a token list")
    return _rows_of(text, name)


_SHIPPED: TokenTable | None = None


def shipped_tokens() -> TokenTable:
    global _SHIPPED
    if _SHIPPED is None:
        with open(SHIPPED_TABLE, encoding="utf-8") as handle:
            _SHIPPED = _rows_of(handle.read(), "tokens.csv (shipped)")
    return _SHIPPED


def load_tokens(path: str | None = None) -> TokenTable:
    """The shipped list, extended and overridden by the user's file if given."""
    table = dict(shipped_tokens())
    if path:
        table.update(read_tokens_file(path))
    return table


def tokens_digest(path: str | None = None) -> str:
    """A short digest of the effective list (shipped plus the user's file), for a run's settings:
    a resumed run whose token list changed is not the same run. Raises TokensError for a bad file."""
    rows = "\n".join(
        f"{t.chain},{t.address},{t.symbol},{t.decimals},{t.canonical_asset}"
        for _, t in sorted(load_tokens(path).items())
    )
    return hashlib.sha256(rows.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------- scaling


_EXACT_DIGITS = 15  # an integer of at most 15 digits is below 2**53: exact as a float
_EXACT_POWERS = 22  # 10**22 is the largest power of ten exact as a float


def scaled_value(value: str | int, decimals: int) -> float:
    """value / 10**decimals, the float nearest the exact quotient. Python's int / int is correctly
    rounded, so the quotient is rounded once, never through float(value)."""
    return int(value) / 10**decimals


def scaled_values(values: pa.Array, decimals) -> np.ndarray:
    """value / 10**decimals for each decimal-text value (a string array; null gives NaN) and its
    decimals (one int, or an int array per value), each correctly rounded once.

    Where value and 10**decimals are both exact floats (a value of at most 15 digits, at most 22
    decimals), IEEE division is itself the correctly rounded quotient, so those are divided in
    numpy; the rest are divided exactly in Python, one power of ten per distinct decimals."""
    values = values if isinstance(values, pa.Array) else pa.array(values, pa.string())
    n = len(values)
    decimals = np.broadcast_to(np.asarray(decimals, dtype=np.int64), (n,))
    if ((decimals < 0) | (decimals > MAX_DECIMALS)).any():
        raise ValueError(f"decimals must be 0 to {MAX_DECIMALS}")
    result = np.full(n, np.nan)
    present = values.is_valid().to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.binary_length(values), 0).to_numpy(zero_copy_only=False)
    fast = present & (((lengths <= _EXACT_DIGITS) & (decimals <= _EXACT_POWERS)) | (decimals == 0))
    if fast.any():
        # Casting decimal text to float64 is correctly rounded: exact for these, rounded once for decimals 0.
        floats = pc.cast(values.filter(pa.array(fast)), pa.float64()).to_numpy(zero_copy_only=False)
        powers = np.array([float(10**d) for d in range(_EXACT_POWERS + 1)])
        result[fast] = floats / powers[np.minimum(decimals[fast], _EXACT_POWERS)]
    slow = np.flatnonzero(present & ~fast)
    if len(slow):
        texts = values.take(pa.array(slow, pa.int64())).to_pylist()
        slow_decimals = decimals[slow]
        for d in np.unique(slow_decimals).tolist():
            power = 10**d
            at = np.flatnonzero(slow_decimals == d)
            result[slow[at]] = [int(texts[i]) / power for i in at.tolist()]
    return result


def token_columns(transfers: pa.Table, tokens: TokenTable) -> dict[str, pa.Array]:
    """For each row of a token_transfer table (``schemas/token_transfer.avsc``): its token's
    ``symbol``, ``decimals``, ``canonical_asset`` and ``amount`` (value in whole tokens, correctly
    rounded once). All four are null for a token the list does not know."""
    known = list(tokens.values())
    keys = pc.binary_join_element_wise(transfers.column("chain"), transfers.column("token_address"), ":")
    position = pc.index_in(keys, value_set=pa.array([f"{t.chain}:{t.address}" for t in known], pa.string()))
    position = position.combine_chunks() if isinstance(position, pa.ChunkedArray) else position
    found = position.is_valid().to_numpy(zero_copy_only=False)
    index = pc.fill_null(position, 0)

    def column(values: list, kind: pa.DataType) -> pa.Array:
        if not known:
            return pa.nulls(transfers.num_rows, kind)
        return pc.if_else(pa.array(found), pa.array(values, kind).take(index), pa.scalar(None, kind))

    decimals = column([t.decimals for t in known], pa.int64())
    amounts = np.full(transfers.num_rows, np.nan)
    if found.any():
        value = transfers.column("value").combine_chunks().filter(pa.array(found))
        amounts[found] = scaled_values(value, decimals.filter(pa.array(found)).to_numpy(zero_copy_only=False))
    return {
        "symbol": column([t.symbol for t in known], pa.string()),
        "decimals": decimals,
        "canonical_asset": column([t.canonical_asset for t in known], pa.string()),
        "amount": pa.array(amounts, pa.float64(), mask=~found),
    }
