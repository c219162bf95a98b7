"""What one backfill (or one chunk of it) reads, builds and writes, and on which runner.

Beam-free: the command line builds and plans it, and hands it to chunk workers, without
importing Beam (``beam_pipelines.backfill`` builds the pipeline from it).
"""

from __future__ import annotations

from dataclasses import dataclass

from io_connectors.files import DEFAULT_LINE_LIMIT, InputFile
from io_connectors.sinks import PARQUET_ONLY, SinkTarget
from io_connectors.source_formats import SourceFormat, source_of
from io_connectors.time_slice import WHOLE_FILE, TimeSlice
from runners.profiles import RunnerProfile
from transforms.bar_spec import BarSpec


@dataclass(frozen=True)
class BackfillConfig:
    source: SourceFormat | None  # --source: the format of files that do not name their own (InputFile.source)
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

    def sources(self) -> dict[str, SourceFormat]:
        """Every format the run reads, by name, in name order."""
        found = {s.name: s for s in (source_of(f, self.source) for f in self.files)}
        if not found and self.source:
            return {self.source.name: self.source}
        return dict(sorted(found.items()))

    def source_setting(self):
        """The run's source as manifests and the summary record it: one source's name, as a run
        of one always recorded it, or the names of several."""
        names = list(self.sources())
        return names[0] if len(names) == 1 else names
