"""Where chunk workers come from: a fork server that has imported the pipeline code once.

A spawned worker imports Beam, pyarrow and polars before its first chunk, which costs more than
a small chunk's work, and ends with a full interpreter teardown. Workers forked from a server that
already holds those modules start warm and exit at once; started before planning, the server's
imports overlap it.
This module imports nothing heavy, so the command line can start the server first thing.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
from multiprocessing import forkserver

from io_connectors.paths import is_remote, local_files

# What a chunk run imports, so that a worker's first chunk costs no more than its later ones.
WORKER_MODULES = (
    "beam_pipelines.fork_server_lifetime",
    "runners.worker_threads",  # before anything imports polars
    "beam_pipelines.chunked_backfill",
    "beam_pipelines.backfill",  # the pipeline a chunk builds; the command line never imports it
    "apache_beam.runners.portability.fn_api_runner",
    "apache_beam.runners.worker.sdk_worker",
    "apache_beam.runners.worker.bundle_processor",
    "runners.batch_grouping",
    "io_connectors.sources",
    "pyarrow.parquet",
    "polars",  # imported where a chunk first needs it (transforms.trade_chunk), not by planning
)

# Inputs smaller than this (bytes on disk, a little under the Parquet size of
# chunks.PARALLEL_FROM_ROWS trades) rarely make more than one chunk: no server is started early
# for them.
EARLY_START_BYTES = 24 << 20


def die_with_parent(grandparent: int | None = None) -> None:
    """Linux: this process gets SIGKILL when the process that started it dies. It exits at once if
    that already happened, or if its parent is no longer ``grandparent``'s child: a worker forked
    just before the command died may arm the signal only after its fork server is gone."""
    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent or (grandparent is not None and _parent_of(parent) != grandparent):
        os._exit(1)


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def worker_context():
    """The multiprocessing context chunk workers are started from."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WORKER_MODULES))
    return context


def start_early() -> None:
    """Start the fork server now, so that its imports run while this process plans."""
    worker_context()
    forkserver.ensure_running()


def local_input_bytes(patterns: list[str]) -> int:
    """Bytes on disk of the local files the patterns match (remote patterns count as nothing)."""
    paths = {p for pattern in patterns if not is_remote(pattern) for p in local_files(pattern)}
    return sum(os.path.getsize(p) for p in paths)
