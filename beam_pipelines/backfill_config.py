"""What one backfill (or one chunk of it) reads, builds and writes, and on which runner.

Beam-free: the command line builds and plans it, and hands it to chunk workers, without
importing Beam (``beam_pipelines.backfill`` builds the pipeline from it).
"""
from __future__ import annotations

from dataclasses import dataclass

from io_connectors.files import DEFAULT_LINE_LIMIT, InputFile
from io_connectors.sinks import PARQUET_ONLY, SinkTarget
from io_connectors.source_formats import SourceFormat
from io_connectors.time_slice import WHOLE_FILE, TimeSlice
from runners.profiles import RunnerProfile
from transforms.bar_spec import BarSpec


@dataclass(frozen=True)
class BackfillConfig:
    source: SourceFormat
    files: list[InputFile]
    spec: BarSpec
    out: str
    exchange: str | None = None
    symbol: str | None = None
    batch_rows: int = 250_000
    chunk_id: str = "all"
    runner: RunnerProfile = RunnerProfile("direct")
    sinks: tuple[SinkTarget, ...] = PARQUET_ONLY  # Parquet is always written: manifests and validate read it
    time_slice: TimeSlice = WHOLE_FILE
    chunk_rows: int | None = None  # the planner's row budget per chunk; recorded so reruns plan alike
    instruments: str | None = None  # the user's instruments CSV over the shipped table
    line_limit: int = DEFAULT_LINE_LIMIT  # longer text lines are dead letters, read in bounded memory
