"""Typed keys for keyed state and timers.

Runners encode timer keys with the key coder; an untyped tuple key falls back to a coder
that timers cannot round-trip, so every keyed stage declares these types.
"""
import typing

SymbolKey = typing.Tuple[str, str]  # (exchange, symbol)
WindowKey = typing.Tuple[str, str, int]  # (exchange, symbol, window_start_us)
BySymbol = typing.Tuple[SymbolKey, typing.Any]
ByWindow = typing.Tuple[WindowKey, typing.Any]
