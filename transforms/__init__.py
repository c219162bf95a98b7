"""Composite PTransforms and DoFns that turn trades into bars.

Nothing here knows which runner executes it or which source fed it: the backfill and the
live stream apply exactly these transforms, in the order ``transforms.trades_to_bars`` gives.

The package itself imports no Beam: the command line plans with its Beam-free modules
(``bar_spec``, ``interval``, ``computations``...) before Beam loads.
"""

from transforms.bar_spec import BarSpec

__all__ = ["BarSpec", "TradesToBars"]


def __getattr__(name: str):
    # Tests import TradesToBars from the package; it imports Beam, so only on first use
    if name != "TradesToBars":
        raise AttributeError(f"module 'transforms' has no attribute {name!r}")
    from transforms.trades_to_bars import TradesToBars

    return TradesToBars
