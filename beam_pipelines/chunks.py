"""Chunk planning: split a backfill into independent pieces by date (from file names) or by file.

Exchange dumps are daily or monthly files named with their date, so a chunk is a set of
files; nothing has to be read to plan. Files without a date in their name are one chunk each.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, timedelta

from io_connectors.files import InputFile, base_name

_DATE = re.compile(r"(\d{4})-(\d{2})(?:-(\d{2}))?")


class ChunkError(ValueError):
    """The chunking the user asked for cannot be applied to these inputs."""


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    files: tuple[InputFile, ...]


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


def plan_chunks(files: list[InputFile], chunk_days: int | None, start: date | None = None,
                end: date | None = None) -> list[Chunk]:
    """Group files into chunks of ``chunk_days`` days (aligned to ``start`` or the first date).

    Without ``chunk_days`` there is one chunk, ``all``. ``start``/``end`` keep only files whose
    dates overlap the range; a file with no date in its name cannot be placed in a range.
    """
    dated = {f.path: file_date(f.path) for f in files}
    if start or end:
        undated = [f.path for f in files if dated[f.path] is None]
        if undated:
            raise ChunkError(f"cannot place {undated[0]!r} in a date range: its name has no date")
        files = [f for f in files
                 if (end is None or dated[f.path][0] <= end) and (start is None or dated[f.path][1] >= start)]
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
