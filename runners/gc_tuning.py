"""Fewer cyclic garbage collections in the processes that run bundles.

Bundles allocate objects by the million (windowed values, timestamps, chunks, partial bars), and
reference counting frees nearly all of them: they form no cycles. With Python's default
thresholds the cyclic collector still walks the young objects every 700 allocations and, more
and more often as the heap grows, all of them, for no garbage found. Freezing what exists before
the run (modules, the pipeline) takes it out of every pass; a higher first threshold makes passes
rare. Neither changes what is freed, so peak memory stays the same.
"""

from __future__ import annotations

import contextlib
import gc

# Young-generation allocations between passes, then passes between older ones (defaults 700, 10, 10).
THRESHOLDS = (50_000, 20, 100)


def collect_rarely(collect_first: bool = False) -> None:
    """For a process that lives to run pipelines (a chunk worker, a stream): what exists now is
    kept out of the collector for good, and passes are rarer.

    ``collect_first`` frees garbage before freezing; it costs a full pass over everything Beam
    imported, worth it only for a long-lived process.
    """
    if collect_first:
        gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


@contextlib.contextmanager
def collecting_rarely():
    """The same for a run inside a process that goes on afterwards (a single chunk run in-process,
    a test): the caller's thresholds, and its objects' place in the collector, come back at the end."""
    thresholds = gc.get_threshold()
    collect_rarely()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
