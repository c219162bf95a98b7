"""The tables a run's on-chain computations take (``transforms.chain_spec.ChainSpec``), read from
their files: tokens (chain, address, symbol, decimals), address labels (address, label, entity)
and fusions given on the command line as ``ASSET=TABLE:EXCHANGE:SYMBOL``.
"""

from __future__ import annotations

import csv
import re

from transforms.chain_spec import FUSION_TABLES, ChainSpec, Fusion, Token

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class ChainTableError(ValueError):
    """A tokens or labels file, or a fusion, that cannot be used: one line saying why."""


def _rows(path: str, required: tuple[str, ...]) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            names = [name.strip().lower() for name in reader.fieldnames or []]
            missing = [name for name in required if name not in names]
            if missing:
                raise ChainTableError(f"{path}: no {', '.join(missing)} column (found: {', '.join(names) or 'none'})")
            reader.fieldnames = names
            return [
                {k: (v or "").strip() for k, v in row.items() if k is not None}
                for row in reader
                if any((v or "").strip() for v in row.values() if isinstance(v, str))
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ChainTableError(f"{path}: {error}") from None


def _address(value: str, path: str, line: int) -> str:
    if not _ADDRESS.match(value):
        raise ChainTableError(f"{path}:{line}: {value!r} is not an address (0x and 40 hex digits)")
    return value.lower()


def read_tokens(path: str) -> tuple[Token, ...]:
    tokens = []
    for line, row in enumerate(_rows(path, ("chain", "address", "symbol", "decimals")), start=2):
        decimals = row["decimals"]
        if decimals and not (decimals.isdigit() and int(decimals) <= 255):
            raise ChainTableError(f"{path}:{line}: decimals {decimals!r} is not an integer from 0 to 255")
        tokens.append(
            Token(
                row["chain"].lower(),
                _address(row["address"], path, line),
                row["symbol"] or None,
                int(decimals) if decimals else None,
            )
        )
    return tuple(tokens)


def read_labels(path: str) -> tuple[tuple[str, str], ...]:
    labels = []
    for line, row in enumerate(_rows(path, ("address", "entity")), start=2):
        if not row["entity"]:
            raise ChainTableError(f"{path}:{line}: no entity")
        labels.append((_address(row["address"], path, line), row["entity"]))
    return tuple(labels)


def parse_fusion(text: str) -> Fusion:
    """``USDT=bars:binance:BTCUSDT`` (an exchange's time bars) or ``USDT=bars_consolidated:BTC/USDT``."""
    asset, equals, series = text.partition("=")
    parts = series.split(":")
    if not equals or not asset:
        raise ChainTableError(f"--fuse {text!r}: expected ASSET=TABLE:EXCHANGE:SYMBOL, e.g. USDT=bars:binance:BTCUSDT")
    if parts[0] == "bars_consolidated" and len(parts) == 2:
        return Fusion(asset.upper(), "bars_consolidated", "consolidated", parts[1])
    if len(parts) != 3 or parts[0] not in FUSION_TABLES:
        raise ChainTableError(
            f"--fuse {text!r}: expected ASSET=bars:EXCHANGE:SYMBOL or ASSET=bars_consolidated:BASE/QUOTE"
        )
    return Fusion(asset.upper(), parts[0], parts[1], parts[2])


def chain_spec_from_files(tokens_path: str, labels_path: str | None = None, fusions=()) -> ChainSpec:
    """The run's ``ChainSpec``; ChainTableError (one line) for an unusable file or fusion."""
    try:
        return ChainSpec(
            read_tokens(tokens_path),
            None if labels_path is None else read_labels(labels_path),
            tuple(parse_fusion(f) if isinstance(f, str) else f for f in fusions),
        )
    except ChainTableError:
        raise
    except ValueError as error:
        raise ChainTableError(str(error)) from None
