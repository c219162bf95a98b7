"""Imported by the chunk workers' fork server, before Arrow or polars start a thread: one thread
per worker for both.

The fork server runs one chunk worker per core already; each library's own thread pool inside a
worker (Arrow decoding Parquet, polars hashing) only competes with the other workers for the same
cores. A value the user set in the environment is kept. The in-process path is left alone: a
single chunk has the cores to itself.
"""

import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")  # polars sizes its pool once, when imported

import pyarrow  # noqa: E402  (after the environment is set, by design)

if "OMP_NUM_THREADS" not in os.environ:  # what Arrow would read for its default
    pyarrow.set_cpu_count(1)
