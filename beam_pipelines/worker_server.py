"""Where chunk workers come from: a fork server that has imported the pipeline code once.

A spawned worker spends about a second importing Beam, pyarrow and polars before its first chunk,
and ends with a full interpreter teardown. Workers forked from a server that already holds those
modules start warm and exit at once; started before planning, the server's imports overlap it.
This module imports nothing heavy, so the command line can start the server first thing.
"""
from __future__ import annotations

import glob
import multiprocessing
import os
from multiprocessing import forkserver

# What a chunk run imports, so that a worker's first chunk costs no more than its later ones.
WORKER_MODULES = (
    "beam_pipelines.fork_server_exit",
    "beam_pipelines.chunked",
    "apache_beam.runners.portability.fn_api_runner",
    "apache_beam.runners.worker.sdk_worker",
    "apache_beam.runners.worker.bundle_processor",
    "runners.batch_grouping",
    "io_connectors.sources",
    "pyarrow.parquet",
)

# Inputs smaller than this (bytes on disk; 2M trades of Parquet are about 30 MB) rarely make more
# than one chunk (see chunks.PARALLEL_FROM_ROWS): no server is started early for them.
EARLY_START_BYTES = 24 << 20


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
    paths = {p for pattern in patterns if "://" not in pattern for p in glob.glob(pattern)}
    return sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
