"""Chunked, resumable backfills: each chunk is one pipeline run with its own manifest.

A chunk's files carry its id in their names, so re-running it (after a crash, or because an
input changed) overwrites exactly its files, each atomically. Chunks run in worker processes, in parallel up to
the number of cores; workers die with their parent, so a killed run leaves nothing running.
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from beam_pipelines.accounting import Accounting
from beam_pipelines.backfill_config import BackfillConfig
from beam_pipelines.chunk_planning import Chunk
from beam_pipelines.cli_common import PipelineLog
from beam_pipelines.manifest import (
    ChunkManifest,
    FileRecord,
    chunk_output_files,
    input_path,
    remove_stale_outputs,
    remove_temporary_files,
)
from beam_pipelines.worker_server import die_with_parent, worker_context
from io_connectors.instruments import instruments_digest
from io_connectors.sinks import recorded_settings
from runners.gc_tuning import collect_rarely, collecting_rarely
from runners.malloc_tuning import reuse_freed_memory


def run_settings(config: BackfillConfig) -> dict:
    """What must match for an earlier chunk's output to be reused."""
    spec = config.spec
    return {
        "source": config.source_setting(),
        "interval": spec.interval.text,
        "fill_gaps": spec.fill_gaps,
        "allowed_lateness_seconds": spec.allowed_lateness_seconds,
        "accumulation": spec.accumulation,
        "exchange": config.exchange,
        "symbol": config.symbol,
        "chunk_rows": config.chunk_rows,
        **recorded_settings(config.sinks),
        **_instruments_setting(config.instruments),
        **_bars_setting(spec),
    }


def _bars_setting(spec) -> dict:
    """The kinds of bar a run builds, when other than time bars alone: a run asking for other
    kinds writes other tables; a run of time bars alone records the settings it always did."""
    if not spec.thresholds and spec.time_bars and spec.consolidation is None and spec.chain is None:
        return {}
    consolidated = {"consolidated": spec.consolidation.settings()} if spec.consolidation is not None else {}
    chain = {"chain": spec.chain.settings()} if spec.chain is not None else {}
    return {"bars": [t.text for t in spec.thresholds], "time_bars": spec.time_bars, **consolidated, **chain}


def _instruments_setting(path: str | None) -> dict:
    """A user's instruments file changes the trades' pairs (in dead letters and counters), so a
    resumed run with another file is another run; without one the settings are as before."""
    if not path:
        return {}
    return {"instruments": instruments_digest(path)}


def run_chunk(config: BackfillConfig, chunk: Chunk, inputs: list[FileRecord] | None = None) -> ChunkManifest:
    """Run one chunk to completion and return its manifest (also written under _manifests/).

    ``inputs`` are the chunk's input files with their checksums, if the caller has them already."""
    # Beam is imported where a chunk runs (a worker has it preloaded), not by the command line,
    # which only plans and hands chunks out.
    from beam_pipelines.backfill import run_pipeline

    manifest = ChunkManifest(
        chunk.chunk_id, run_settings(config), inputs=inputs or input_records(chunk), started_at=time.time()
    )
    manifest.write(config.out)
    chunk_config = dataclasses.replace(
        config, files=list(chunk.files), chunk_id=chunk.chunk_id, time_slice=chunk.time_slice
    )
    accounting = Accounting.from_counters(run_pipeline(chunk_config))
    manifest.counts = accounting.as_dict()
    # Files are overwritten in place (each atomically), so readers never miss this chunk's
    # bars; files of an earlier attempt that this one did not rewrite are stale and go now.
    remove_stale_outputs(config.out, chunk.chunk_id, not_before=manifest.started_at)
    manifest.outputs = [FileRecord.of(p, config.out) for p in chunk_output_files(config.out, chunk.chunk_id)]
    manifest.status = "unreconciled" if accounting.problems() else "complete"
    manifest.finished_at = time.time()
    manifest.seconds = round(manifest.finished_at - manifest.started_at, 3)
    manifest.write(config.out)
    return manifest


def input_records(chunk: Chunk) -> list[FileRecord]:
    return [FileRecord.of(f.path) for f in chunk.files]


def chunks_to_run(config: BackfillConfig, chunks: list[Chunk]) -> tuple[list[Chunk], list[Chunk]]:
    """(chunks to run, chunks already complete whose inputs and outputs still verify)."""
    existing = {m.chunk_id: m for m in ChunkManifest.all_in(config.out)}
    todo, done = [], []
    for chunk in chunks:
        manifest = existing.get(chunk.chunk_id)
        same_inputs = manifest is not None and sorted(r.path for r in manifest.inputs) == sorted(
            input_path(f.path) for f in chunk.files
        )
        if same_inputs and manifest.settings == run_settings(config) and not manifest.problems(config.out):
            done.append(chunk)
        else:
            todo.append(chunk)
    return todo, done


def conflicting_settings(config: BackfillConfig, chunks: list[Chunk]) -> list[str]:
    """Chunks on disk that this run would not replace yet that would sit beside its output: built
    with other settings, cut differently from the same inputs (their bars would be doubled), or
    whose damaged manifest no longer says which."""
    ours = run_settings(config)
    planned = {c.chunk_id for c in chunks}
    inputs = {input_path(f.path) for c in chunks for f in c.files}
    manifests, damaged = ChunkManifest.scan(config.out)
    return sorted(
        {
            m.chunk_id
            for m in manifests
            if m.settings != ours or (m.chunk_id not in planned and inputs & {r.path for r in m.inputs})
        }
        | {chunk_id for chunk_id in damaged if chunk_id not in planned}
    )


def _start_worker(command_pid: int) -> None:
    """Linux: a worker gets SIGKILL when the fork server it came from dies, which the server does
    when the command (``command_pid``) dies; it keeps Beam's failure logs off the terminal (the
    command reports a failure itself), reuses freed memory and runs the cyclic garbage collector rarely."""
    die_with_parent(grandparent=command_pid)
    PipelineLog.install()
    reuse_freed_memory()
    collect_rarely()


def run_chunks(config: BackfillConfig, chunks: list[Chunk], workers: int, on_done) -> list[ChunkManifest]:
    """Run chunks, ``workers`` at a time; ``on_done(manifest)`` is called as each finishes."""
    remove_temporary_files(config.out)
    if workers <= 1 or len(chunks) <= 1:
        reuse_freed_memory()
        manifests = []
        with collecting_rarely():
            for chunk in chunks:
                manifests.append(run_chunk(config, chunk))
                on_done(manifests[-1])
        return manifests
    # Until the fork server has imported Beam, this process only waits, and each worker would start
    # by checksumming its inputs: the chunks that start first get theirs from here meanwhile.
    first_inputs = {chunk.chunk_id: input_records(chunk) for chunk in chunks[:workers]}
    manifests = []
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=worker_context(), initializer=_start_worker, initargs=(os.getpid(),)
    ) as pool:
        pending = {pool.submit(run_chunk, config, chunk, first_inputs.get(chunk.chunk_id)) for chunk in chunks}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                manifests.append(future.result())
                on_done(manifests[-1])
    return manifests


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
