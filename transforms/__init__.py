"""Composite PTransforms and DoFns that turn trades into bars.

Nothing here knows which runner executes it or which source fed it: the backfill and the
live stream apply exactly these transforms, in the order ``TradesToBars`` gives.
"""
from transforms.bar_spec import BarSpec
from transforms.trades_to_bars import TradesToBars

__all__ = ["BarSpec", "TradesToBars"]
