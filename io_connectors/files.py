"""Finding and opening input files: plain, gzip, or zip archives as exchanges distribute them.

Paths go through Beam's FileSystems, so the same code reads local disks, gs:// and s3://. Local
patterns are matched without Beam (``io_connectors.paths``): the command line matches inputs while
it plans, and a local backfill's chunk workers should not wait for it to import Beam.
"""
from __future__ import annotations

import gzip
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa

from io_connectors.paths import is_remote, local_files


class InputError(ValueError):
    """The inputs named by the user cannot be used (nothing matched, unreadable)."""


@dataclass(frozen=True)
class InputFile:
    path: str
    size: int


def match_inputs(patterns: list[str]) -> list[InputFile]:
    """Expand globs; every pattern must match at least one file."""
    found: dict[str, InputFile] = {}
    for pattern in patterns:
        files = _match_remote(pattern) if is_remote(pattern) else _match_local(pattern)
        if not files:
            raise InputError(f"no input files matched {pattern!r}")
        for f in files:
            found[f.path] = f
    return sorted(found.values(), key=lambda f: f.path)


def _match_local(pattern: str) -> list[InputFile]:
    return [InputFile(p, os.path.getsize(p)) for p in local_files(pattern)]


def _match_remote(pattern: str) -> list[InputFile]:
    from apache_beam.io.filesystems import FileSystems
    try:
        results = FileSystems.match([pattern])[0].metadata_list
    except Exception as error:  # FileSystems raises several types for bad schemes/paths
        raise InputError(f"cannot list {pattern!r}: {error}") from None
    return [InputFile(m.path, m.size_in_bytes) for m in results if not m.path.endswith("/")]


def base_name(path: str) -> str:
    return PurePosixPath(path.replace("\\", "/")).name


def open_members(path: str):
    """Yield (source name, bytes) for each data member: the file itself, its gunzipped body,
    or each file inside a zip archive."""
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        data = handle.read()
    lower = path.lower()
    if lower.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                if info.is_dir() or base_name(info.filename).startswith("."):
                    continue
                yield f"{path}!{info.filename}", archive.read(info)
    elif lower.endswith(".gz"):
        yield path, gzip.decompress(data)
    else:
        yield path, data


MAX_BATCH_BYTES = 2**31 - 1  # an Arrow binary array's 32-bit offsets


def line_batches(data: bytes, batch_rows: int):
    """Yield (lines, number of the first) for runs of up to ``batch_rows`` physical lines.

    Lines come without their line breaks (LF or CRLF), as one Arrow binary array per run: a
    single buffer is cheap to parse column-wise and to ship between stages, where a list of
    bytes objects costs an object per line. A final empty line is not a record.
    """
    raw = np.frombuffer(data, np.uint8)
    breaks = np.flatnonzero(raw == 0x0A)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(raw)]))
    if starts[-1] == len(raw):  # the data ends with a line break, or is empty
        starts, ends = starts[:-1], ends[:-1]
    if b"\r" in data:
        ends = ends - ((ends > starts) & (raw[np.maximum(ends - 1, 0)] == 0x0D))
    first = 0
    while first < len(starts):
        last = min(first + batch_rows, len(starts))
        while last - first > 1 and ends[last - 1] - starts[first] > MAX_BATCH_BYTES:
            last = first + (last - first) // 2
        yield _binary_lines(raw, starts[first:last], ends[first:last]), first + 1
        first = last


def _binary_lines(raw: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    """The byte ranges [starts, ends) of ``raw``, back to back, as one binary array. Between two
    consecutive lines lie only their line break's one or two bytes, which are left out."""
    low, high = int(starts[0]), int(ends[-1])
    if high - low > MAX_BATCH_BYTES:  # only a single line can be this long: the reader dead-letters the file
        raise ValueError(f"a line of {high - low:,} bytes, over Arrow's {MAX_BATCH_BYTES:,}")
    gaps = starts[1:] - ends[:-1]
    if not (gaps - 1).any():  # every break a lone LF, and no line holds one: drop them all at once
        content = np.frombuffer(raw[low:high].tobytes().replace(b"\n", b""), np.uint8)
    else:
        keep = np.ones(high - low, bool)
        gap_starts = ends[:-1] - low
        keep[gap_starts] = False
        keep[(gap_starts + 1)[gaps == 2]] = False
        content = raw[low:high][keep]
    offsets = np.concatenate(([0], np.cumsum(ends - starts))).astype(np.int32)
    return pa.Array.from_buffers(pa.binary(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(content)])


def uncompressed_size(path: str, size: int) -> int:
    """About how many bytes of records a file holds: a zip's members, a gzip's body, or the file.

    Used to plan chunks without reading; read from the archive's own directory or footer when
    the file is local, else guessed at four times the compressed size.
    """
    lower = path.lower()
    if not lower.endswith((".zip", ".gz")):
        return size
    try:
        if lower.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                return sum(info.file_size for info in archive.infolist())
        with open(path, "rb") as handle:  # gzip's footer: the body's size modulo 2**32
            handle.seek(-4, os.SEEK_END)
            body = int.from_bytes(handle.read(4), "little")
        return body if body >= size else size * 4
    except (OSError, zipfile.BadZipFile, ValueError):
        return size * 4
