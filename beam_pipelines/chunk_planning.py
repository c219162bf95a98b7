"""Chunk planning: split a backfill into independent pieces by date (from file names) or by file,
then split any piece too large to hold in memory.

Exchange dumps are daily or monthly files named with their date, so a chunk is a set of
files; nothing has to be read to plan. Files without a date in their name are one chunk each.
A chunk over the row budget is cut again: dated text files into runs of consecutive files,
Parquet files into event-time slices at window boundaries (only their time column is read).
Each piece is a pipeline run of bounded size, which is what keeps a backfill's memory flat
however large the input. Information bars count from each UTC day's start, so when they are
asked for, Parquet is cut only where a UTC day starts too (``cut_boundaries``).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pyarrow.parquet as pq

from io_connectors.files import InputFile, base_name, uncompressed_size
from io_connectors.formats.normalized import event_time_micros
from io_connectors.source_formats import SOURCES
from io_connectors.time_slice import WHOLE_FILE, TimeSlice, row_group_time_range, statistics_hold
from transforms.event_time import micros_to_datetime

_DATE = re.compile(r"(\d{4})-(\d{2})(?:-(\d{2}))?")


class ChunkError(ValueError):
    """The chunking the user asked for cannot be applied to these inputs."""


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    files: tuple[InputFile, ...]
    time_slice: TimeSlice = WHOLE_FILE


def file_date(path: str) -> tuple[date, date] | None:
    """The dates a file covers, from its name: a day (2024-01-31) or a month (2024-01)."""
    match = _DATE.search(base_name(path.split("!")[0]))
    if not match:
        return None
    year, month, day = int(match.group(1)), int(match.group(2)), match.group(3)
    try:
        if day:
            first = date(year, month, int(day))
            return first, first
        first = date(year, month, 1)
        following = date(year + month // 12, month % 12 + 1, 1)
        return first, following - timedelta(days=1)
    except ValueError:
        return None


def parse_chunk_days(text: str) -> int:
    match = re.fullmatch(r"(\d+)d", text.strip())
    if not match or int(match.group(1)) <= 0:
        raise ChunkError(f"bad --chunk {text!r}: use a whole number of days, e.g. 1d or 7d")
    return int(match.group(1))


def plan_chunks(
    files: list[InputFile], chunk_days: int | None, start: date | None = None, end: date | None = None
) -> list[Chunk]:
    """Group files into chunks of ``chunk_days`` days (aligned to ``start`` or the first date).

    Without ``chunk_days`` there is one chunk, ``all``. ``start``/``end`` keep only files whose
    dates overlap the range; a file with no date in its name cannot be placed in a range.
    """
    dated = {f.path: file_date(f.path) for f in files}
    if start or end:
        undated = [f.path for f in files if dated[f.path] is None]
        if undated:
            raise ChunkError(f"cannot place {undated[0]!r} in a date range: its name has no date")
        files = [
            f
            for f in files
            if (end is None or dated[f.path][0] <= end) and (start is None or dated[f.path][1] >= start)
        ]
        if not files:
            raise ChunkError("no input file falls between --from and --to")
    if not chunk_days:
        return [Chunk("all", tuple(files))]
    origin = start or min((d[0] for d in dated.values() if d), default=None)
    groups: dict[str, list[InputFile]] = {}
    for f in files:
        if dated[f.path] is None:
            chunk_id = "file-" + hashlib.blake2b(f.path.encode(), digest_size=6).hexdigest()
        else:
            index = (dated[f.path][0] - origin).days // chunk_days
            first = origin + timedelta(days=index * chunk_days)
            chunk_id = first.isoformat() if chunk_days == 1 else f"{first.isoformat()}+{chunk_days}d"
        groups.setdefault(chunk_id, []).append(f)
    return [Chunk(chunk_id, tuple(sorted(group, key=lambda f: f.path))) for chunk_id, group in sorted(groups.items())]


def joined_where_dates_overlap(chunks: list[Chunk]) -> list[Chunk]:
    """Chunks merged wherever their files' dates overlap (a file with no date in its name may hold
    any day): bars pooled across files, as consolidated bars pool venues, need every file of a day
    in one chunk, and a monthly file of one venue beside another's daily files would split it."""
    if len(chunks) < 2:
        return chunks
    spans = []
    for chunk in chunks:
        dates = [file_date(f.path) for f in chunk.files]
        spans.append(None if any(d is None for d in dates) else (min(d[0] for d in dates), max(d[1] for d in dates)))
    if any(span is None for span in spans):
        return [Chunk("all", tuple(sorted((f for c in chunks for f in c.files), key=lambda f: f.path)))]
    order = sorted(range(len(chunks)), key=lambda i: spans[i])
    groups: list[list[int]] = []
    reach = None
    for i in order:
        if groups and spans[i][0] <= reach:
            groups[-1].append(i)
            reach = max(reach, spans[i][1])
        else:
            groups.append([i])
            reach = spans[i][1]
    joined = []
    for group in groups:
        members = [chunks[i] for i in group]
        chunk_id = members[0].chunk_id if len(members) == 1 else f"{members[0].chunk_id}..{members[-1].chunk_id}"
        joined.append(Chunk(chunk_id, tuple(sorted((f for c in members for f in c.files), key=lambda f: f.path))))
    return joined


# Bytes per record of a text dump, to estimate rows without reading (Binance aggTrades CSV lines
# are 50-60 bytes; an overestimate of rows only makes chunks smaller).
TEXT_BYTES_PER_ROW = 50
# A window's state and bundle bookkeeping, in trades: the in-process runner's cost per window
# over its cost per trade (docs/benchmarks.md#figures-behind-design-choices).
WINDOW_COST_ROWS = 120
# A chunk of at least this many rows is cut into a multiple of MIN_PIECES pieces, even when under
# the budget, so that every worker gets an equal share (below it, a second worker's start-up and
# a second pipeline cost about what they save). A constant, not the worker count: the cut decides
# the chunk ids, and a rerun with other --workers must find the same chunks.
PARALLEL_FROM_ROWS = 2_000_000
MIN_PIECES = 2


def _piece_rows(total_rows: int, row_budget: int) -> int:
    """Rows per piece: at most the budget, in a multiple of MIN_PIECES pieces once the chunk is large."""
    if total_rows < PARALLEL_FROM_ROWS:
        return row_budget
    pieces = -(-total_rows // row_budget)
    pieces = -(-pieces // MIN_PIECES) * MIN_PIECES
    return -(-total_rows // pieces)


DAY_SECONDS = 86_400


@dataclass(frozen=True)
class _Boundaries:
    """Cut points every ``seconds`` from the epoch, found as ``Interval.window_start_micros`` finds window starts."""

    seconds: int

    def window_start_micros(self, event_time_us):
        micros = self.seconds * 1_000_000
        return event_time_us // micros * micros


def cut_boundaries(interval, whole_days: bool):
    """Where a Parquet chunk may be cut: at the interval's window starts, so no time bar is split;
    with ``whole_days`` (information bars, which count from each UTC day's start) only at those
    that start a UTC day too. Windows of whole days (weeks start on Mondays) start days already."""
    if not whole_days or interval.seconds % DAY_SECONDS == 0:
        return interval
    # Epoch-aligned windows shorter than a day, or of hours that do not divide one (5h): their
    # starts and the days' meet every lcm seconds from the epoch (every day for a divisor).
    return _Boundaries(math.lcm(interval.seconds, DAY_SECONDS))


def chunk_layout(chunk: Chunk, layout: str | None) -> str | None:
    """The layout of a chunk's files (``layout`` for those that do not name their source), or None
    when they mix layouts."""
    layouts = {SOURCES[f.source].layout if f.source else layout for f in chunk.files}
    return layouts.pop() if len(layouts) == 1 else None


def split_large_chunks(
    chunks: list[Chunk], layout: str | None, interval, row_budget: int | None, whole_days: bool = False
) -> list[Chunk]:
    """Cut every chunk over ``row_budget`` rows into pieces under it (as far as windows allow),
    and every chunk over PARALLEL_FROM_ROWS into a multiple of MIN_PIECES pieces.

    ``layout`` is that of files read as the run's ``--source``; files that name their own source
    have its layout. A chunk mixing Parquet and text is not cut: a time slice cannot be applied to
    text, and a piece of each could split one bar between them (``--chunk Nd`` still bounds it).
    Parquet is cut at the window starts of ``interval``; with ``whole_days`` (information bars) only
    at those that start a UTC day (``cut_boundaries``)."""
    if not row_budget:
        return chunks
    pieces = []
    for chunk in chunks:
        layout_of_chunk = chunk_layout(chunk, layout)
        if layout_of_chunk == "parquet":
            pieces += _time_slices(chunk, interval, row_budget, cut_boundaries(interval, whole_days))
        elif layout_of_chunk == "text":
            pieces += _runs_of_dated_files(chunk, row_budget, whole_days)
        else:
            pieces.append(chunk)
    return pieces


def _runs_of_dated_files(chunk: Chunk, row_budget: int, whole_days: bool = False) -> list[Chunk]:
    """Runs of consecutive days, about equal in rows, as few as the budget needs: equal runs
    finish together on parallel workers. A day's files stay in one run. Undated files stay
    together: nothing says which of them hold the same days; with ``whole_days``, so do files
    of more than a day (a month's file holds days of the other files' runs)."""
    dates = [file_date(f.path) for f in chunk.files]
    rows_of = {f.path: uncompressed_size(f.path, f.size) // TEXT_BYTES_PER_ROW for f in chunk.files}
    total = sum(rows_of.values())
    row_budget = _piece_rows(total, row_budget)
    if total <= row_budget or any(d is None or (whole_days and d[0] != d[1]) for d in dates):
        return [chunk]
    days: dict[date, list[InputFile]] = {}
    for (first, _), f in sorted(zip(dates, chunk.files), key=lambda pair: (pair[0], pair[1].path)):
        days.setdefault(first, []).append(f)
    share = total / -(-total // row_budget)
    runs: dict[int, tuple[date, list[InputFile]]] = {}  # piece -> (first day, files)
    before = 0
    for first, files in days.items():
        rows = sum(rows_of[f.path] for f in files)
        piece = int((before + rows / 2) // share)  # the piece holding the day's middle row
        runs.setdefault(piece, (first, []))[1].extend(files)
        before += rows
    return [Chunk(f"{chunk.chunk_id}@{first.strftime('%Y%m%d')}", tuple(files)) for first, files in runs.values()]


def _time_slices(chunk: Chunk, interval, row_budget: int, boundaries) -> list[Chunk]:
    """Event-time slices of a chunk's Parquet files, cut at window starts that are ``boundaries``,
    each about ``row_budget`` rows (counting each window of ``interval`` as WINDOW_COST_ROWS more)."""

    window_counts = []
    statistics_checked = True  # every row group's times lie where its statistics say: slices may trust them
    try:
        for f in chunk.files:
            parquet = pq.ParquetFile(f.path)
            if "event_time" not in parquet.schema_arrow.names:
                return [chunk]
            for group in range(parquet.num_row_groups):
                micros, usable = event_time_micros(parquet.read_row_group(group, columns=["event_time"]))
                window_counts.append(_trades_per_window(interval.window_start_micros(micros[usable])))
                statistics_checked &= statistics_hold(row_group_time_range(parquet, group), micros, usable)
    except Exception:  # unreadable: the pipeline reads it whole and dead-letters it, once
        return [chunk]
    if not window_counts:
        return [chunk]
    starts = np.concatenate([s for s, _ in window_counts])
    counts = np.concatenate([c for _, c in window_counts])
    starts, inverse = np.unique(starts, return_inverse=True)
    # A window costs the runner about as much as WINDOW_COST_ROWS trades (its trigger and state
    # bookkeeping), so sparse data is cut by windows too: its pieces then also run in parallel.
    cost = np.bincount(inverse, weights=counts).astype(np.int64) + WINDOW_COST_ROWS
    total = int(cost.sum())
    row_budget = _piece_rows(total, row_budget)
    if total <= row_budget:
        return [chunk]
    pieces = -(-total // row_budget)
    cumulative = np.cumsum(cost)
    targets = np.arange(1, pieces) * (total / pieces)
    cut_windows = _cut_windows(starts, cumulative, targets, boundaries)
    cuts = [None] + [int(starts[i]) for i in cut_windows] + [None]
    return [
        Chunk(
            f"{chunk.chunk_id}@{_stamp(low if low is not None else int(starts[0]))}",
            chunk.files,
            TimeSlice(low, high, statistics_checked) if len(cuts) > 2 else WHOLE_FILE,
        )
        for low, high in zip(cuts[:-1], cuts[1:])
    ]


def _cut_windows(starts, cumulative, targets, boundaries):
    """The windows to cut before: for each target cost, the last window starting at one of the
    ``boundaries`` with at most that cost before it (with every window a boundary, the window
    the target cost falls in)."""
    allowed = np.flatnonzero(boundaries.window_start_micros(starts) == starts)
    cost_before = np.r_[0, cumulative[:-1]][allowed]
    chosen = np.searchsorted(cost_before, targets, side="right") - 1
    cut_windows = np.unique(allowed[chosen[chosen >= 0]])
    return cut_windows[(cut_windows > 0) & (cut_windows < len(starts))]


def _trades_per_window(window_starts):
    """(window starts, trades in each); a row group in time order (the usual one) needs no sort."""
    if len(window_starts) > 1 and not (window_starts[1:] >= window_starts[:-1]).all():
        return np.unique(window_starts, return_counts=True)
    firsts = np.r_[0, np.flatnonzero(np.diff(window_starts)) + 1] if len(window_starts) else np.zeros(0, np.int64)
    return window_starts[firsts], np.diff(np.r_[firsts, len(window_starts)])


def _stamp(micros: int) -> str:
    return micros_to_datetime(micros).strftime("%Y%m%dT%H%M%S")
