"""Composite PTransforms and DoFns that turn trades into bars.

Nothing here knows which runner executes it or which source fed it: the backfill and the
live stream apply exactly these transforms, in the order ``TradesToBars`` gives.

The package's names load on first use, so that importing one Beam-free module of it (the
command line's planning reads ``bar_spec`` and ``interval``) does not import Beam.
"""

import importlib

_EXPORTS = {"BarSpec": "transforms.bar_spec", "TradesToBars": "transforms.trades_to_bars"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'transforms' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
