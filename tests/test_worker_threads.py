"""Chunk workers run Arrow and polars on one thread each: the pool already runs a worker per core,
so a library's own threads would only compete with the other workers."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

from beam_pipelines.worker_server import worker_context


def _thread_counts() -> tuple[int, int]:
    import polars as pl
    import pyarrow as pa

    return pl.thread_pool_size(), pa.cpu_count()


def test_a_chunk_worker_runs_arrow_and_polars_on_one_thread():
    with ProcessPoolExecutor(1, mp_context=worker_context()) as pool:
        assert pool.submit(_thread_counts).result() == (1, 1)
