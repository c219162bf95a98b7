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

from io_connectors.paths import beam_file_systems, is_remote, local_files


class InputError(ValueError):
    """The inputs named by the user cannot be used (nothing matched, unreadable)."""


@dataclass(frozen=True)
class InputFile:
    path: str
    size: int
    source: str | None = None
    """The name of the input format it is read as (``io_connectors.source_formats``); None: the run's ``--source``."""


def match_inputs(patterns: list[str], source: str | None = None) -> list[InputFile]:
    """Expand globs, each file to be read as ``source``; every pattern must match at least one file."""
    found: dict[str, InputFile] = {}
    for pattern in patterns:
        files = _match_remote(pattern, source) if is_remote(pattern) else _match_local(pattern, source)
        if not files:
            raise InputError(f"no input files matched {pattern!r}")
        for f in files:
            found[f.path] = f
    return sorted(found.values(), key=lambda f: f.path)


def _match_local(pattern: str, source: str | None) -> list[InputFile]:
    return [InputFile(p, os.path.getsize(p), source) for p in local_files(pattern)]


def _match_remote(pattern: str, source: str | None) -> list[InputFile]:
    try:
        results = beam_file_systems().match([pattern])[0].metadata_list
    except Exception as error:  # FileSystems raises several types for bad schemes/paths
        raise InputError(f"cannot list {pattern!r}: {error}") from None
    return [InputFile(m.path, m.size_in_bytes, source) for m in results if not m.path.endswith("/")]


def base_name(path: str) -> str:
    return PurePosixPath(path.replace("\\", "/")).name


def open_members(path: str):
    """Yield (source name, binary stream) for each data member: the file itself, its gunzipped body,
    or each file inside a zip archive (hidden ones too: nothing in an archive goes unread). Streams
    are read block by block, so a member's size does not decide the memory a read takes."""
    with beam_file_systems().open(path, compression_type="uncompressed") as handle:
        lower = path.lower()
        if lower.endswith(".zip"):
            with zipfile.ZipFile(handle if handle.seekable() else io.BytesIO(handle.read())) as archive:
                for info in archive.infolist():
                    if not info.is_dir():
                        yield from _zip_member(archive, info, f"{path}!{info.filename}")
        elif lower.endswith(".gz"):
            with gzip.GzipFile(fileobj=handle) as body:
                yield path, body
        else:
            yield path, handle


def _zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str):
    """One member's stream; a member that cannot be opened (encrypted, an unknown compression, a
    bad header) is a stream that fails at once, so it costs that member, not the archive's rest."""
    try:
        member = archive.open(info)
    except Exception as error:  # noqa: BLE001 - zipfile raises RuntimeError, NotImplementedError, BadZipFile...
        yield name, _FailedStream(error)
        return
    with member:
        yield name, member


class _FailedStream:
    def __init__(self, error: Exception):
        self._error = error

    def read(self, _size: int = -1) -> bytes:
        raise self._error


MAX_BATCH_BYTES = 2**31 - 1  # an Arrow binary array's 32-bit offsets
READ_BLOCK_BYTES = 64 * 2**20
"""Bytes read from a stream at a time: most daily dumps fit in one block, so are split at once."""
DEFAULT_LINE_LIMIT = 2**20
"""Longer lines are not records of any format: each is reported, not passed on."""
LONG_LINE_HEAD_BYTES = 1024
"""How much of an over-long line its report keeps."""


@dataclass(frozen=True)
class LongLine:
    """A line over the line limit: only its number, length and first bytes are kept."""

    number: int
    length: int
    head: bytes


class DamagedStream(Exception):
    """A stream failed partway (a truncated gzip body, a zip member with a bad CRC...): the lines
    before ``next_line`` were passed on, the rest could not be read."""

    def __init__(self, next_line: int, cause: BaseException):
        super().__init__(f"damaged from line {next_line:,}: {type(cause).__name__}: {cause}")
        self.next_line = next_line


class _ReadFailed(Exception):
    """The stream's own error, told apart from errors in splitting what it gave."""


def line_batches(data: bytes, batch_rows: int):
    """Yield (lines, number of the first) for runs of up to ``batch_rows`` physical lines.

    Lines come without their line breaks (LF or CRLF), as one Arrow binary array per run: a
    single buffer is cheap to parse column-wise and to ship between stages, where a list of
    bytes objects costs an object per line. A final empty line is not a record.
    """
    raw = np.frombuffer(data, np.uint8)
    starts, ends = _line_spans(raw, b"\r" in data)
    for first, last in _batch_ranges(starts, ends, 0, len(starts), batch_rows):
        yield _binary_lines(raw, starts[first:last], ends[first:last]), first + 1


def text_batches(stream, batch_rows: int, line_limit: int = DEFAULT_LINE_LIMIT, block_bytes: int | None = None):
    """Yield (lines, line numbers, long lines) for the physical lines of a binary stream, read a
    block at a time: the batches ``line_batches`` makes of the whole data (or fewer lines, where a
    batch's worth would hold more than a block's bytes), except that lines over ``line_limit``
    bytes are left out and reported as ``LongLine``s: of a line longer than a block, no more than
    a block is held at a time.

    Line breaks are LF or CRLF; a stream whose first block has no LF but has CRs (old Mac files)
    breaks at CRs instead. Raises ``DamagedStream`` if the stream fails, after passing on the
    whole lines read before the failure.
    """
    block_bytes = block_bytes or READ_BLOCK_BYTES
    blocks = _line_feed_blocks(stream, block_bytes)
    number, pending = 1, b""  # pending: lines short of a whole batch, then the start of an unfinished line
    try:
        for block, last in blocks:
            data = pending + block if pending else block
            cut = len(data) if last else data.rfind(b"\n") + 1
            if len(data) - cut <= line_limit + 1:  # + 1: the CR of a CRLF the next block completes
                used_lines, used_bytes = yield from _batches_of_lines(
                    data, cut, number, batch_rows, line_limit, carry_limit=None if last else block_bytes
                )
                number, pending = number + used_lines, data[used_bytes:]
                continue
            # The unfinished line is over the limit already: pass on the lines before it, then skip to its end.
            used_lines, _ = yield from _batches_of_lines(data, cut, number, batch_rows, line_limit)
            number, pending = number + used_lines, b""
            seen = data[cut : cut + LONG_LINE_HEAD_BYTES], len(data) - cut, data[-1:]
            data = block = None  # not held while the rest of the line is read
            (length, head), pending = _skip_line(*seen, blocks)
            yield _NO_LINES, _NO_NUMBERS, [LongLine(number, length, head)]
            number += 1
    except _ReadFailed as failure:
        used_lines, _ = yield from _batches_of_lines(pending, pending.rfind(b"\n") + 1, number, batch_rows, line_limit)
        raise DamagedStream(number + used_lines, failure.__cause__) from failure.__cause__
    yield from _batches_of_lines(pending, len(pending), number, batch_rows, line_limit)


_NO_LINES = pa.array([], pa.binary())
_NO_NUMBERS = np.zeros(0, np.int64)


def _line_feed_blocks(stream, block_bytes: int):
    """(block, whether it is the last) for each block of the stream, with lone-CR line breaks made
    LFs if the first block says the stream uses them. A block shorter than asked for is the last
    one if the stream then has no more. A stream that fails passes on what it gave before the
    failure, then raises ``_ReadFailed``."""
    block, failure = _read(stream, block_bytes)
    carriage_returns = b"\n" not in block and b"\r" in block
    while block:
        following = None
        if failure is None and len(block) < block_bytes:
            following, failure = _read(stream, block_bytes)
        yield block.replace(b"\r", b"\n") if carriage_returns else block, following == b"" and failure is None
        if following is None and failure is None:
            block, failure = _read(stream, block_bytes)
        else:
            block = following or b""
    if failure is not None:
        raise _ReadFailed() from failure


READ_PIECE_BYTES = 2**20
"""A block is read in pieces: a damaged stream (gzip, zip) gives nothing of the read that meets
the damage, so what a failing read loses is at most a piece."""


def _read(stream, size: int) -> tuple[bytes, Exception | None]:
    """(up to ``size`` bytes, the error that ended the read early, if any)."""
    pieces, got = [], 0
    while got < size:
        try:
            piece = stream.read(min(READ_PIECE_BYTES, size - got))
        except Exception as error:  # zlib, gzip, zip and I/O errors: the stream is damaged here
            return b"".join(pieces), error
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
    return (pieces[0] if len(pieces) == 1 else b"".join(pieces)), None


def _skip_line(head: bytes, length: int, last_byte: bytes, blocks) -> tuple[tuple[int, bytes], bytes]:
    """((length, first bytes) of a line of which ``length`` bytes, starting with ``head`` and ending
    with ``last_byte``, were read, what follows its line break), reading on through ``blocks``
    without keeping what is skipped."""
    rest = b""
    for block, _ in blocks:
        end = block.find(b"\n")
        head += block[: max(0, min(LONG_LINE_HEAD_BYTES - len(head), end if end >= 0 else len(block)))]
        if end < 0:
            length, last_byte = length + len(block), block[-1:]
            continue
        length += end
        if (block[end - 1 : end] if end else last_byte) == b"\r":
            length -= 1
        rest = block[end + 1 :]
        break
    else:  # the stream ended within the line
        length -= last_byte == b"\r"
    return (length, head[:length]), rest


def _batches_of_lines(
    data: bytes, end: int, number: int, batch_rows: int, line_limit: int, carry_limit: int | None = None
):
    """Yield the batches of the lines in ``data[:end]``, the first numbered ``number``; return
    (lines used, bytes used). With ``carry_limit``, ``data[:end]`` ends with a line break and only
    whole batches are used, unless the lines left over hold more than ``carry_limit`` bytes."""
    raw = np.frombuffer(data, np.uint8, count=end)
    starts, ends = _line_spans(raw, b"\r" in data)
    used = len(starts)
    if carry_limit is not None:
        used -= used % batch_rows
        if used < len(starts) and ends[-1] - starts[used] > carry_limit:
            used = len(starts)
    long = None
    if used and (ends[:used] - starts[:used] > line_limit).any():
        long = ends[:used] - starts[:used] > line_limit
    for first, last in _batch_ranges(starts, ends, 0, used, batch_rows):
        yield _lines_kept(
            raw, starts[first:last], ends[first:last], number + first, None if long is None else long[first:last]
        )
    return used, int(starts[used]) if used < len(starts) else end


def _lines_kept(raw: np.ndarray, starts: np.ndarray, ends: np.ndarray, number: int, long: np.ndarray | None):
    """(lines, numbers, long lines) of one batch: the lines over the limit are left out."""
    numbers = np.arange(number, number + len(starts), dtype=np.int64)
    if long is None or not long.any():
        return _binary_lines(raw, starts, ends), numbers, []
    long_lines = [
        LongLine(
            int(numbers[i]),
            int(ends[i] - starts[i]),
            raw[starts[i] : min(ends[i], starts[i] + LONG_LINE_HEAD_BYTES)].tobytes(),
        )
        for i in np.flatnonzero(long)
    ]
    keep = ~long
    if not keep.any():
        return _NO_LINES, _NO_NUMBERS, long_lines
    return _binary_lines(raw, starts[keep], ends[keep]), numbers[keep], long_lines


def _line_spans(raw: np.ndarray, has_carriage_returns: bool) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the lines of ``raw``, without their line breaks; a final empty line is not one."""
    breaks = np.flatnonzero(raw == 0x0A)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(raw)]))
    if starts[-1] == len(raw):  # the data ends with a line break, or is empty
        starts, ends = starts[:-1], ends[:-1]
    if has_carriage_returns:
        ends = ends - ((ends > starts) & (raw[np.maximum(ends - 1, 0)] == 0x0D))
    return starts, ends


def _batch_ranges(starts: np.ndarray, ends: np.ndarray, first: int, end: int, batch_rows: int):
    """(first, last) line index of each batch: ``batch_rows`` lines, fewer if they would overflow Arrow's offsets."""
    while first < end:
        last = min(first + batch_rows, end)
        while last - first > 1 and ends[last - 1] - starts[first] > MAX_BATCH_BYTES:
            last = first + (last - first) // 2
        yield first, last
        first = last


def _binary_lines(raw: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    """The byte ranges [starts, ends) of ``raw``, back to back, as one binary array. Between two
    consecutive lines lie only their line break's one or two bytes, which are left out, unless a
    line between them was left out too."""
    low, high = int(starts[0]), int(ends[-1])
    if high - low > MAX_BATCH_BYTES:  # only a single line can be this long: the reader dead-letters the file
        raise ValueError(f"a line of {high - low:,} bytes, over Arrow's {MAX_BATCH_BYTES:,}")
    gaps = starts[1:] - ends[:-1]
    if not (gaps - 1).any():  # every break a lone LF, and no line holds one: drop them all at once
        content = np.frombuffer(raw[low:high].tobytes().replace(b"\n", b""), np.uint8)
    elif (gaps <= 2).all():
        keep = np.ones(high - low, bool)
        gap_starts = ends[:-1] - low
        keep[gap_starts] = False
        keep[(gap_starts + 1)[gaps == 2]] = False
        content = raw[low:high][keep]
    else:  # lines left out: keep the bytes from each start to its end
        edges = np.zeros(high - low + 1, np.int8)
        edges[starts - low] += 1
        edges[ends - low] -= 1
        content = raw[low:high][np.cumsum(edges, dtype=np.int8)[:-1].view(bool)]
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
