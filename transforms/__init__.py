"""Composite PTransforms and DoFns that turn trades and other records into bars and tables.

Nothing here knows which runner executes it or which source fed it: the backfill and the
live stream apply exactly these transforms, in the order ``transforms.trades_to_bars`` gives.

The package imports nothing itself, so the command line can plan with its Beam-free modules
(``bar_spec``, ``interval``, ``computations``...) before Beam loads; import from the modules.
"""
