"""Exchange-native symbols: from file names, and split into base and quote where it is unambiguous."""

from __future__ import annotations

import re

# Longest first, so that e.g. FDUSD wins over USD.
BINANCE_QUOTES = sorted(
    [
        "USDT",
        "USDC",
        "FDUSD",
        "BUSD",
        "TUSD",
        "DAI",
        "BTC",
        "ETH",
        "BNB",
        "XRP",
        "TRX",
        "DOGE",
        "EUR",
        "GBP",
        "TRY",
        "BRL",
        "AUD",
        "JPY",
        "RUB",
        "UAH",
        "ZAR",
        "IDR",
        "PLN",
        "ARS",
        "MXN",
        "COP",
        "CZK",
        "USD",
        "USDP",
        "PAX",
        "DOT",
        "SOL",
        "BIDR",
        "AEUR",
    ],
    key=len,
    reverse=True,
)
KRAKEN_QUOTES = sorted(
    [
        "ZUSD",
        "ZEUR",
        "ZGBP",
        "ZCAD",
        "ZJPY",
        "XXBT",
        "XETH",
        "USDT",
        "USDC",
        "USD",
        "EUR",
        "GBP",
        "CAD",
        "JPY",
        "CHF",
        "AUD",
        "XBT",
        "ETH",
        "DAI",
        "DOT",
    ],
    key=len,
    reverse=True,
)


def split_by_quote(symbol: str, quotes: list[str]) -> tuple[str | None, str | None]:
    upper = symbol.upper()
    for quote in quotes:
        if upper.endswith(quote) and len(upper) > len(quote):
            return upper[: -len(quote)], quote
    return None, None


def split_by_separator(symbol: str) -> tuple[str | None, str | None]:
    parts = re.split(r"[-/_]", symbol)
    if len(parts) == 2 and all(parts):
        return parts[0].upper(), parts[1].upper()
    return None, None


def binance_symbol_from_name(name: str) -> str | None:
    """``XRPETH-aggTrades-2019-10-11.zip`` -> ``XRPETH``."""
    match = re.match(r"^([A-Za-z0-9]+)-(aggTrades|trades)-", name)
    return match.group(1).upper() if match else None


def leading_symbol_from_name(name: str) -> str | None:
    """``XBTUSD.csv`` -> ``XBTUSD``; ``BTC-USD_2024-01-01.jsonl`` -> ``BTC-USD``."""
    match = re.match(r"^([A-Za-z0-9]+(?:-[A-Za-z]+[A-Za-z0-9]*)?)(?=[._]|$)", name)
    return match.group(1).upper() if match else None
