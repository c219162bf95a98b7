"""ethereum-etl exports of blocks and ERC-20 token transfers, CSV and JSON lines: read and written.

ethereum-etl (``export_blocks_and_transactions``, ``export_token_transfers``, ``stream``) writes
CSV with a header line, or JSON lines with one object per item. The parsers turn a raw batch of
either into the chain tables (``schemas/block.avsc``, ``schemas/token_transfer.avsc``, in their
column order); ``write_csv_text`` and ``write_json_lines`` turn such tables back into the same
text, and ``row_writer`` writes rows of ethereum-etl's own columns one at a time (as ``cryptobeam
chain export`` streams a node's blocks), so this one module owns the format both ways.

Reading:

- A line whose first character is ``{`` is a JSON object, any other line a CSV row: one parser
  takes either export, and a stray line of one in a file of the other costs that line alone. A
  JSON item of another ethereum-etl type (``"type": "transaction"`` in a stream's mixed output)
  is a dead letter, not a record.
- CSV columns are found by the header's names, in any order; columns cryptobeam does not use
  (nonce, logs_bloom, withdrawals, ...) are ignored. Only the batch that starts a file holds its
  header line. Other batches take the file's header from ``raw.extra[HEADER_KEY]`` when the
  reader puts it there; without it, a line's field count picks the layout among ethereum-etl's
  own column orders and the one ``write_csv_text`` writes (``headerless_layouts``).
- Addresses (0x + 40 hex digits) and hashes (0x + 64) are lower-cased. ethereum-etl writes them
  lower case; a checksummed (mixed-case) address is accepted without checking its checksum.
- ``value`` must be an integer in [0, 2**256) written in decimal digits, and is kept exact as
  text without leading zeros. JSON may give it as a number: it is read as the exact decimal
  written (an exponent form such as 1e18 only when its value is an integer), never as a float.
- Block times are Unix seconds, or BigQuery's 'YYYY-MM-DD HH:MM:SS UTC' text form.
- ``ethereumetl export_token_transfers`` writes no block hash or time. Such rows keep
  ``block_hash``, ``block_timestamp``, ``event_time`` and ``transfer_id`` null: the pipeline fills
  them by joining with the blocks on ``block_number``.
- ``chain`` is the caller's (``ethereum`` by default) unless a ``chain`` column says otherwise.
  ``status`` is ``finalized`` unless a ``status`` column says otherwise: an export is a copy of
  settled history, read long after its blocks were final, so the reorg-following machinery has
  nothing to retract. ``retracted`` is false unless a ``retracted`` column says true, and
  ``publication`` 0 unless a ``publication`` column says otherwise (ethereum-etl writes neither).

Every line that cannot be read is one dead letter with its bytes, line number and one reason:
``bad_encoding``, ``malformed`` (not CSV or JSON of the expected shape, a wrong field count, an
integer or time that is not one), ``unexpected_header`` (a header the columns cannot be found
by: the header line itself; its file's rows then say why too), ``missing_field`` (a column
cryptobeam needs is absent or empty), ``bad_address``, ``bad_hash``, ``bad_value`` (not a decimal
uint256) and ``unknown_status``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from io_connectors.formats.delimited import Fields, looks_like_header, parse_bool, split_fields
from io_connectors.raw_batch import RawBatch
from schemas import arrow_schema
from transforms.dead_letter import dead_letter

HEADER_KEY = "csv_header"
"""Key in ``RawBatch.extra``: the header line (bytes or text) of the CSV file a batch comes from,
for the batches after the first, which do not hold it."""
DEFAULT_CHAIN = "ethereum"
DEFAULT_STATUS = "finalized"
STATUSES = ("latest", "safe", "finalized")
UINT256_LIMIT = 2**256
MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z: any later time is no block's

_ADDRESS, _HASH, _INT, _UINT256, _SECONDS, _CHAIN, _STATUS, _BOOL = (
    "address",
    "hash",
    "int",
    "uint256",
    "seconds",
    "chain",
    "status",
    "bool",
)
_CHAIN_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_UTC_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.0+)? UTC$"
_UINT256_DIGITS = len(str(UINT256_LIMIT))
_BOM = "\ufeff"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    required: bool = True


@dataclass(frozen=True)
class ExportKind:
    name: str
    """ethereum-etl's name of the export, e.g. token_transfers."""
    item_type: str
    """The ``type`` ethereum-etl's JSON items carry, e.g. token_transfer."""
    schema: str
    """The table's schema in ``schemas/``."""
    columns: tuple[Column, ...]
    """What is read, by name; also what the writers write, in this order."""
    etl_columns: tuple[str, ...]
    """ethereum-etl's own CSV column order."""
    etl_versions: tuple[int, ...] = ()
    """Column counts ethereum-etl's releases wrote (prefixes of ``etl_columns``)."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def headerless_layouts(self) -> dict[int, tuple[str, ...]]:
        """Column names by field count, for CSV lines whose file header the batch does not hold."""
        layouts = {count: self.etl_columns[:count] for count in self.etl_versions}
        earlier = tuple(name for name in self.names if name not in _ADDED_COLUMNS)
        layouts[len(earlier)] = earlier
        layouts[len(self.columns)] = self.names
        return layouts


_CHAIN_COLUMNS = (
    Column("chain", _CHAIN, False),
    Column("status", _STATUS, False),
    Column("retracted", _BOOL, False),
    Column("publication", _INT, False),
)
_ADDED_COLUMNS = ("publication",)
"""Columns ``write_csv_text`` writes that files it wrote before do not have: a headerless line of
such a file is read by its field count too."""

TOKEN_TRANSFER_EXPORT = ExportKind(
    "token_transfers",
    "token_transfer",
    "token_transfer",
    (
        Column("token_address", _ADDRESS),
        Column("from_address", _ADDRESS),
        Column("to_address", _ADDRESS),
        Column("value", _UINT256),
        Column("transaction_hash", _HASH),
        Column("log_index", _INT),
        Column("block_number", _INT),
        Column("block_hash", _HASH, False),
        Column("block_timestamp", _SECONDS, False),
        *_CHAIN_COLUMNS,
    ),
    ("token_address", "from_address", "to_address", "value", "transaction_hash", "log_index", "block_number"),
    (7,),
)

BLOCK_EXPORT = ExportKind(
    "blocks",
    "block",
    "block",
    (
        Column("number", _INT),
        Column("hash", _HASH),
        Column("parent_hash", _HASH),
        Column("miner", _ADDRESS),
        Column("gas_limit", _INT),
        Column("gas_used", _INT),
        Column("timestamp", _SECONDS),
        Column("transaction_count", _INT),
        Column("base_fee_per_gas", _INT, False),
        *_CHAIN_COLUMNS,
    ),
    (
        "number",
        "hash",
        "parent_hash",
        "nonce",
        "sha3_uncles",
        "logs_bloom",
        "transactions_root",
        "state_root",
        "receipts_root",
        "miner",
        "difficulty",
        "total_difficulty",
        "size",
        "extra_data",
        "gas_limit",
        "gas_used",
        "timestamp",
        "transaction_count",
        "base_fee_per_gas",
        "withdrawals_root",
        "withdrawals",
        "blob_gas_used",
        "excess_blob_gas",
    ),
    # Before London, with base_fee_per_gas, with Shanghai's withdrawals, with Cancun's blob gas.
    (18, 19, 21, 23),
)

EXPORT_KINDS = {kind.name: kind for kind in (TOKEN_TRANSFER_EXPORT, BLOCK_EXPORT)}

TRANSFER_COLUMNS_WITH_BLOCK = (*TOKEN_TRANSFER_EXPORT.etl_columns, "block_hash", "block_timestamp")
"""ethereum-etl's token_transfers columns, in its order, then the block's hash and timestamp, which
its export_token_transfers leaves out and a reader would otherwise join from the blocks."""


def export_kind(kind: str | ExportKind) -> ExportKind:
    """The export by its ethereum-etl name (token_transfers, blocks) or its schema's (token_transfer, block)."""
    if isinstance(kind, ExportKind):
        return kind
    for candidate in EXPORT_KINDS.values():
        if kind in (candidate.name, candidate.schema):
            return candidate
    raise ValueError(f"unknown ethereum-etl export {kind!r}; known: {', '.join(EXPORT_KINDS)}")


# ---------------------------------------------------------------------- reading


def parse_token_transfers(raw: RawBatch, chain: str = DEFAULT_CHAIN, status: str = DEFAULT_STATUS):
    """(token_transfer table, dead letters) of a batch of an ethereum-etl token_transfers export."""
    return parse_export(raw, TOKEN_TRANSFER_EXPORT, chain, status)


def parse_blocks(raw: RawBatch, chain: str = DEFAULT_CHAIN, status: str = DEFAULT_STATUS):
    """(block table, dead letters) of a batch of an ethereum-etl blocks export."""
    return parse_export(raw, BLOCK_EXPORT, chain, status)


@dataclass
class ParsedRows:
    """A batch parsed: the table, and for each of its rows the line it was read from."""

    table: pa.Table
    line_numbers: np.ndarray
    """1-based line number (or message offset) of each row, as the raw batch gave it."""
    payloads: pa.Array
    """The original bytes of each row's line."""
    dead_letters: list[dict]
    """One per line that did not become a row (blank lines and a good header excepted), in line order."""


def parse_export(raw: RawBatch, kind: str | ExportKind, chain: str = DEFAULT_CHAIN, status: str = DEFAULT_STATUS):
    """(table in the kind's schema, dead letters) of a batch of CSV and/or JSON lines."""
    parsed = parse_rows(raw, kind, chain, status)
    return parsed.table, parsed.dead_letters


def parse_rows(
    raw: RawBatch, kind: str | ExportKind, chain: str = DEFAULT_CHAIN, status: str = DEFAULT_STATUS
) -> ParsedRows:
    """The batch parsed, with where each row came from (for records dead-lettered later on)."""
    kind = export_kind(kind)
    _check_defaults(chain, status)
    dead: list[dict] = []
    payloads = raw.payloads
    numbers = np.asarray(raw.line_numbers, dtype=np.int64)
    is_json = pc.starts_with(payloads, b"{").to_numpy(zero_copy_only=False)
    indented = pc.or_(pc.starts_with(payloads, b" "), pc.starts_with(payloads, b"\t")).to_numpy(zero_copy_only=False)
    if indented.any():
        is_json[indented] = pc.match_substring_regex(_subset(payloads, indented), r"^[ \t]*\{").to_numpy(
            zero_copy_only=False
        )
    if raw.starts_file and len(payloads) and payloads[0].as_py().lstrip().startswith(_BOM.encode() + b"{"):
        is_json[0] = True
    parts = []
    if is_json.any():
        fields = _json_fields(_subset(payloads, is_json), numbers[is_json], kind, raw.source, dead)
        parts.append(_table_of(fields, kind.names, None, kind, chain, status, raw.source))
    if not is_json.all():
        for fields, names, problem in _csv_fields(raw, _subset(payloads, ~is_json), numbers[~is_json], kind, dead):
            parts.append(_table_of(fields, names, problem, kind, chain, status, raw.source))
    dead.sort(key=lambda letter: letter["source_offset"])  # stable: a header's letter stays before its rows'
    return _in_line_order(parts, kind, dead)


def _check_defaults(chain: str, status: str) -> None:
    if not pc.match_substring_regex(pa.array([chain], pa.string()), _CHAIN_PATTERN)[0].as_py():
        raise ValueError(f"chain {chain!r} is not a chain name (lower-case letters, digits, '.', '_', '-')")
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")


def _subset(array: pa.Array, mask: np.ndarray) -> pa.Array:
    return array if mask.all() else array.take(pa.array(np.flatnonzero(mask), pa.int64()))


def _in_line_order(parts: list[tuple[pa.Table, np.ndarray, pa.Array]], kind: ExportKind, dead: list) -> ParsedRows:
    if not parts:
        return ParsedRows(
            arrow_schema(kind.schema).empty_table(), np.zeros(0, np.int64), pa.array([], pa.binary()), dead
        )
    if len(parts) == 1:
        return ParsedRows(*parts[0], dead)
    table = pa.concat_tables([table for table, _, _ in parts])
    numbers = np.concatenate([numbers for _, numbers, _ in parts])
    payloads = pa.concat_arrays([payloads for _, _, payloads in parts])
    order = np.argsort(numbers, kind="stable")
    index = pa.array(order, pa.int64())
    return ParsedRows(table.take(index), numbers[order], payloads.take(index), dead)


# --- JSON lines


class _NotAValue(ValueError):
    pass


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


_JSON_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constant)


def _decimal_text(number: Decimal) -> str:
    """A JSON number with a fraction or exponent: its integer digits when its exact value is an
    integer of sane size (1e18, 5.0), else its own text, which no integer check accepts."""
    if number.is_finite() and number.adjusted() < 2 * _UINT256_DIGITS and number == number.to_integral_value():
        return str(int(number))
    return str(number)


def _json_text(value, name: str) -> str | None:
    """A JSON value as the text a CSV field would hold; _NotAValue for an object, an array, or a
    string UTF-8 cannot hold (JSON's escapes can spell a lone surrogate)."""
    kind = type(value)
    if value is None:
        return None
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _NotAValue(f"{name} holds a lone surrogate") from None
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is Decimal:
        return _decimal_text(value)
    raise _NotAValue(f"{name} is a JSON {'object' if kind is dict else 'array'}, not a value")


def _json_column(values: list, name: str) -> tuple[pa.Array, dict[int, str]]:
    """(the values as text, what is wrong by row) for one column of the records."""
    try:
        return pa.array(values, pa.string()), {}
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
        pass
    if all(type(value) is int for value in values):  # integers, as ethereum-etl writes them
        try:
            return pa.array(values, pa.int64()).cast(pa.string()), {}
        except OverflowError:
            return pa.array([str(value) for value in values], pa.string()), {}
    texts, problems = [], {}
    for row, value in enumerate(values):
        try:
            texts.append(_json_text(value, name))
        except _NotAValue as error:
            texts.append(None)
            problems[row] = str(error)
    return pa.array(texts, pa.string()), problems


def _json_fields(payloads: pa.Array, numbers: np.ndarray, kind: ExportKind, source: str, dead: list) -> Fields:
    """The lines' objects as Fields of the kind's columns (absent ones null); lines that are not
    JSON objects of this export, or hold a value that is not one, become dead letters."""
    decode = _JSON_DECODER.decode
    records, kept = [], []
    for i, (line, number) in enumerate(zip(payloads.to_pylist(), numbers.tolist())):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            dead.append(dead_letter("bad_encoding", f"not UTF-8: {error}", "parse", line, source, number))
            continue
        try:
            record = decode(text[1:] if number == 1 and text.startswith(_BOM) else text)
            if type(record) is not dict:
                raise _NotAValue("not a JSON object")
            item_type = record.get("type", kind.item_type)
            if item_type != kind.item_type:
                raise _NotAValue(f"type is {_shown(item_type)}, not {kind.item_type}")
        except RecursionError:
            problem = "JSON nested too deeply"
        except _NotAValue as error:
            problem = str(error)
        except ValueError as error:  # json.JSONDecodeError, or an integer of over 4300 digits
            problem = f"not JSON: {error}"
        else:
            records.append(record)
            kept.append(i)
            continue
        dead.append(dead_letter("malformed", problem, "parse", line, source, number))
    columns, problems = [], {}
    for name in kind.names:
        column, wrong = _json_column([record.get(name) for record in records], name)
        columns.append(column)
        for row, message in wrong.items():
            problems.setdefault(row, message)
    # Row-major, as a split CSV line: the records' fields one after another.
    width = len(columns)
    interleave = (np.arange(width)[None, :] * len(records) + np.arange(len(records))[:, None]).ravel()
    values = pa.concat_arrays(columns).take(pa.array(interleave, pa.int64())) if width else pa.array([], pa.string())
    lists = pa.ListArray.from_arrays(pa.array(np.arange(0, len(records) * width + 1, width, dtype=np.int32)), values)
    index = pa.array(kept, pa.int64())
    fields = Fields(lists, numbers[kept], payloads.take(index), np.arange(len(kept)), dead)
    for message in sorted(set(problems.values())):
        wrong = np.zeros(len(records), bool)
        wrong[[row for row, said in problems.items() if said == message]] = True
        fields = fields.reject(wrong[fields.rows], "malformed", message, source)
    return fields


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


# --- CSV


def _header_names(line) -> list[str] | None:
    """The column names of a header line (bytes or text), or None if it is not a header."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            return None
    line = line.removeprefix(_BOM).strip()
    try:
        names = next(csv.reader([line]), [])
    except csv.Error:
        return None
    if not names or not looks_like_header(names[0].strip()):
        return None
    return [name.strip().lower() for name in names]


def _header_problem(names: list[str], kind: ExportKind) -> tuple[str, str] | None:
    """(reason for its rows, what is wrong) if the columns cannot be found by this header."""
    twice = sorted({name for name in names if name in kind.names and names.count(name) > 1})
    if twice:
        return "malformed", f"the file's header names {', '.join(twice)} more than once"
    missing = [column.name for column in kind.columns if column.required and column.name not in names]
    if missing:
        return "missing_field", f"the file's header has no {', '.join(missing)} column"
    return None


def _csv_fields(raw: RawBatch, payloads: pa.Array, numbers: np.ndarray, kind: ExportKind, dead: list):
    """Yield (Fields, column names, header problem) for the CSV lines: one group under the file's
    header, or one per layout when the header is not known."""
    names = None
    if raw.starts_file:
        first = _first_non_blank(payloads)
        if first is not None and int(numbers[first]) == int(raw.line_numbers[_first_non_blank(raw.payloads)]):
            names = _header_names(payloads[first].as_py())
            if names is not None:
                problem = _header_problem(names, kind)
                if problem:
                    dead.append(
                        dead_letter(
                            "unexpected_header",
                            f"{problem[1]}: {_shown(','.join(names))}",
                            "parse",
                            payloads[first].as_py(),
                            raw.source,
                            int(numbers[first]),
                        )
                    )
                # A slice, not a copy of the batch, where the header is the very first line.
                rest = payloads.slice(first + 1)
                payloads = rest if first == 0 else pa.concat_arrays([payloads.slice(0, first), rest])
                numbers = np.delete(numbers, first)
    if names is None and raw.extra.get(HEADER_KEY) is not None:
        names = _header_names(raw.extra[HEADER_KEY])
    layouts = {len(names): tuple(names)} if names is not None else kind.headerless_layouts()
    fields = _split_csv(RawBatch(source=raw.source, payloads=payloads, line_numbers=numbers), set(layouts), dead)
    if names is not None:
        yield fields, names, _header_problem(names, kind)
        return
    counts = pc.list_value_length(fields.lists).to_numpy(zero_copy_only=False)[fields.rows]
    for count, layout in layouts.items():
        mask = counts == count
        if mask.any():
            yield fields.keep(mask), layout, None


def _first_non_blank(lines: pa.Array) -> int | None:
    """Position of the first line that is not blank; read one at a time, as it is nearly always the first."""
    for i in range(len(lines)):
        if lines[i].as_py().strip():
            return i
    return None


def _may_hold(lines: pa.Array, byte: bytes) -> bool:
    """Whether any line may hold the byte: one scan of the data buffer, many times faster than
    matching line by line when (as usual) none does."""
    data = lines.buffers()[2]
    return data is not None and bool((np.frombuffer(data, np.uint8) == ord(byte)).any())


def _split_csv(raw: RawBatch, field_counts: set[int], dead: list) -> Fields:
    """The lines split into fields. Lines without a quote go through the vectorized splitter;
    the few with one (ethereum-etl quotes fields holding commas, e.g. a block's withdrawals) through
    Python's csv module."""
    quoted = np.zeros(len(raw.payloads), bool)
    if _may_hold(raw.payloads, b'"'):
        quoted = pc.match_substring(raw.payloads, b'"').to_numpy(zero_copy_only=False)
    plain = RawBatch(source=raw.source, payloads=_subset(raw.payloads, ~quoted), line_numbers=raw.line_numbers[~quoted])
    fields = split_fields(plain, field_counts)
    dead.extend(fields.dead_letters)
    fields.dead_letters = dead
    if not quoted.any():
        return fields
    rows, numbers, payloads = [], [], []
    expected = " or ".join(str(count) for count in sorted(field_counts))
    for line, number in zip(_subset(raw.payloads, quoted).to_pylist(), raw.line_numbers[quoted].tolist()):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            dead.append(dead_letter("bad_encoding", f"not UTF-8: {error}", "parse", line, raw.source, number))
            continue
        try:
            row = next(csv.reader([text.removeprefix(_BOM) if number == 1 else text], strict=True))
        except csv.Error as error:
            dead.append(dead_letter("malformed", f"not CSV: {error}", "parse", line, raw.source, number))
            continue
        if len(row) not in field_counts:
            dead.append(dead_letter("malformed", f"expected {expected} fields", "parse", line, raw.source, number))
            continue
        rows.append(row)
        numbers.append(number)
        payloads.append(line)
    plain_rows = pa.array(fields.rows, pa.int64())
    lists = pa.concat_arrays([fields.lists.take(plain_rows), pa.array(rows, fields.lists.type)])
    all_numbers = np.concatenate([fields.line_numbers, np.asarray(numbers, np.int64)])
    all_payloads = pa.concat_arrays([fields.all_payloads.take(plain_rows), pa.array(payloads, pa.binary())])
    return Fields(lists, all_numbers, all_payloads, np.argsort(all_numbers, kind="stable"), dead)


# --- checking and converting the columns


def _non_empty(column: pa.Array) -> np.ndarray:
    return pc.greater(pc.binary_length(pc.fill_null(column, "")), 0).to_numpy(zero_copy_only=False)


def _matches(column: pa.Array, pattern: str) -> np.ndarray:
    return pc.match_substring_regex(pc.fill_null(column, ""), pattern).to_numpy(zero_copy_only=False)


def _is_hex(column: pa.Array, lowered: pa.Array, digits: int) -> np.ndarray:
    """Where text is 0x and ``digits`` hex digits, given it lower-cased too: of such text, trimming
    the hex digits off its end leaves 0x (faster than a regular expression)."""
    column, lowered = pc.fill_null(column, ""), pc.fill_null(lowered, "")
    shape = pc.and_(pc.equal(pc.binary_length(column), digits + 2), pc.starts_with(column, "0x"))
    prefix = pc.ascii_rtrim(lowered, characters="0123456789abcdef")
    return pc.and_(shape, pc.equal(prefix, "0x")).to_numpy(zero_copy_only=False)


def _decimal_below(column: pa.Array, limit: int) -> tuple[pa.Array, np.ndarray]:
    """(canonical text, ok): decimal digits of an integer in [0, limit), without leading zeros."""
    column = pc.fill_null(column, "")
    digits = pc.ascii_is_decimal(column).to_numpy(zero_copy_only=False)
    stripped = pc.ascii_ltrim(column, characters="0")
    canonical = pc.if_else(pc.equal(stripped, ""), "0", stripped)
    length = pc.binary_length(canonical).to_numpy(zero_copy_only=False)
    # Of two digit strings of one length, the lesser number sorts first.
    below = pc.less(canonical, str(limit)).to_numpy(zero_copy_only=False)
    return canonical, digits & ((length < len(str(limit))) | ((length == len(str(limit))) & below))


def uint256_text(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(canonical decimal text, ok): decimal digits of an integer in [0, 2**256), without leading zeros."""
    return _decimal_below(column, UINT256_LIMIT)


def non_negative_int64(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values, ok): decimal digits of an integer in [0, 2**63)."""
    text, ok = _decimal_below(column, 2**63)
    values = pc.if_else(pa.array(ok), text, "0").cast(pa.int64()).to_numpy(zero_copy_only=False)
    return values, ok


def block_seconds(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, ok): Unix seconds, or 'YYYY-MM-DD HH:MM:SS UTC' as BigQuery exports a block time."""
    seconds, ok = non_negative_int64(column)
    seconds, ok = seconds.copy(), ok.copy()
    text = np.zeros(len(column), bool)
    if not ok.all():
        text[~ok] = _matches(_subset(column, ~ok), _UTC_TEXT)
    if text.any():
        index = pa.array(np.flatnonzero(text), pa.int64())
        written = pc.utf8_slice_codeunits(column.take(index), 0, 19)
        moments = pc.strptime(written, format="%Y-%m-%d %H:%M:%S", unit="s", error_is_null=True)
        # strptime rolls an impossible date over (02-30 becomes 03-02): only a date that prints
        # back as written is one.
        real = pc.fill_null(pc.equal(pc.strftime(moments, format="%Y-%m-%d %H:%M:%S"), written), False)
        real = real.to_numpy(zero_copy_only=False)
        at = np.flatnonzero(text)[real]
        seconds[at] = pc.fill_null(moments.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)[real]
        ok[at] = True
    return seconds, ok & (seconds <= MAX_SECONDS)


def _converted(column: pa.Array, kind: str):
    """(values, ok, reason, what a good value is) for one column, over every row."""
    if kind in (_ADDRESS, _HASH):
        digits = 40 if kind == _ADDRESS else 64
        reason = "bad_address" if kind == _ADDRESS else "bad_hash"
        lowered = pc.ascii_lower(column)
        return lowered, _is_hex(column, lowered, digits), reason, f"0x and {digits} hex digits"
    if kind == _INT:
        values, ok = non_negative_int64(column)
        return values, ok, "malformed", "an integer from 0 to 2**63-1"
    if kind == _UINT256:
        values, ok = uint256_text(column)
        return values, ok, "bad_value", "a decimal integer from 0 to 2**256-1"
    if kind == _SECONDS:
        values, ok = block_seconds(column)
        return values, ok, "malformed", "Unix seconds or 'YYYY-MM-DD HH:MM:SS UTC'"
    if kind == _CHAIN:
        values = pc.ascii_lower(column)
        return values, _matches(values, _CHAIN_PATTERN), "malformed", "a chain name"
    if kind == _STATUS:
        values = pc.ascii_lower(column)
        ok = pc.is_in(values, pa.array(STATUSES)).to_numpy(zero_copy_only=False)
        return values, ok, "unknown_status", " or ".join(STATUSES)
    values, ok = parse_bool(column)
    return values, ok, "malformed", "true or false"


def _table_of(fields: Fields, names, problem, kind: ExportKind, chain: str, status: str, source: str):
    """(table, line numbers, payloads) of the lines that pass every check; each other line is
    dead-lettered at its first failed check."""
    rows = len(fields)
    if problem is not None:
        fields.dead_letter_lines(np.ones(rows, bool), problem[0], problem[1], source)
        return arrow_schema(kind.schema).empty_table(), np.zeros(0, np.int64), pa.array([], pa.binary())
    position = {name: j for j, name in reversed(list(enumerate(names)))}
    raw_columns = {
        column.name: (
            pc.ascii_trim_whitespace(fields.column(position[column.name]))
            if column.name in position
            else pa.nulls(rows, pa.string())
        )
        for column in kind.columns
    }
    present = {name: _non_empty(values) for name, values in raw_columns.items()}
    good = np.ones(rows, bool)

    def check(ok: np.ndarray, reason: str, message: str) -> None:
        nonlocal good
        fields.dead_letter_lines(good & ~ok, reason, message, source)
        good &= ok

    for column in kind.columns:
        if column.required:
            check(present[column.name], "missing_field", f"{column.name} is missing")
    converted = {}
    for column in kind.columns:
        values, ok, reason, wanted = _converted(raw_columns[column.name], column.kind)
        check(ok | ~present[column.name], reason, f"{column.name} is not {wanted}")
        converted[column.name] = values
    if good.all():  # the usual batch: nothing to cut out
        return _build(kind, converted, present, chain, status), fields.line_numbers, fields.payloads_of(good)
    index = np.flatnonzero(good)
    taken = {name: _take(values, index) for name, values in converted.items()}
    given = {name: mask[index] for name, mask in present.items()}
    return _build(kind, taken, given, chain, status), fields.line_numbers[index], fields.payloads_of(good)


def _take(values, index: np.ndarray):
    if isinstance(values, np.ndarray):
        return values[index]
    return values.take(pa.array(index, pa.int64()))


def _build(kind: ExportKind, values: dict, given: dict, chain: str, status: str) -> pa.Table:
    """The table of the good rows' converted values; ``given`` says where a column had a value."""
    schema = arrow_schema(kind.schema)

    def integer(name: str) -> pa.Array:
        return pa.array(values[name], pa.int64(), mask=~given[name])

    def text(name: str, default: str | None = None) -> pa.Array:
        if given[name].all():
            return values[name]
        if not given[name].any():
            return pa.nulls(len(given[name]), pa.string()) if default is None else pa.repeat(default, len(given[name]))
        return pc.if_else(pa.array(given[name], pa.bool_()), values[name], pa.scalar(default, pa.string()))

    columns = {
        "chain": text("chain", chain),
        "status": text("status", status),
        "retracted": pa.array(values["retracted"] & given["retracted"], pa.bool_()),
        "publication": pa.array(np.where(given["publication"], values["publication"], 0), pa.int64()),
    }
    if kind is TOKEN_TRANSFER_EXPORT:
        seconds, block_hash, log_index = integer("block_timestamp"), text("block_hash"), integer("log_index")
        columns.update(
            token_address=values["token_address"],
            from_address=values["from_address"],
            to_address=values["to_address"],
            value=values["value"],
            transaction_hash=values["transaction_hash"],
            log_index=log_index,
            block_number=integer("block_number"),
            block_hash=block_hash,
            block_timestamp=seconds,
            transfer_id=pc.binary_join_element_wise(block_hash, log_index.cast(pa.string()), "_"),
        )
    else:
        seconds = integer("timestamp")
        columns.update(
            {
                name: integer(name)
                for name in ("number", "gas_used", "gas_limit", "base_fee_per_gas", "transaction_count")
            },
            hash=values["hash"],
            parent_hash=values["parent_hash"],
            timestamp=seconds,
            miner=values["miner"],
        )
    columns["event_time"] = pc.multiply(seconds, 1_000_000).cast(pa.timestamp("us", tz="UTC"))
    return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)


# ---------------------------------------------------------------------- writing


def _text_column(table: pa.Table, column: Column, quote) -> pa.Array:
    """One column of the table as text, nulls as empty: what a CSV field or JSON value holds."""
    values = table.column(column.name).combine_chunks()
    if column.kind == _BOOL:
        return pc.if_else(values, "true", "false")
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return quote(values.cast(pa.string()))
    return values.cast(pa.string())


def _csv_quoted(values: pa.Array) -> pa.Array:
    """Text as a CSV field: quoted, its quotes doubled, only where it holds a comma, quote or line break."""
    needs = _matches(values, r'[,"\r\n]')
    if not needs.any():
        return values
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.if_else(pa.array(needs), quoted, values)


def _json_string(values: pa.Array) -> pa.Array:
    """Text as a JSON string literal."""
    safe = _matches(values, r'^[^"\\\x00-\x1f\x7f]*$')
    plain = pc.binary_join_element_wise('"', values, '"', "")
    if safe.all():
        return plain
    escaped = pa.array([json.dumps(value, ensure_ascii=False) for value in values.to_pylist()], pa.string())
    return pc.if_else(pa.array(safe), plain, escaped)


WRITE_ROWS = 100_000
"""Rows turned into text at a time: Arrow's string arrays stay small, whatever the table's size."""


def _text_of(lines: pa.Array) -> str:
    """The concatenated text of a string array without nulls: its data buffer between the first
    and last offsets, copied out once."""
    width = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    offsets = np.frombuffer(lines.buffers()[1], dtype=width)[lines.offset : lines.offset + len(lines) + 1]
    return lines.buffers()[2][int(offsets[0]) : int(offsets[-1])].to_pybytes().decode("utf-8")


def _write(table: pa.Table, line_fields, head: str = "") -> str:
    """``head``, then the text of each row: ``line_fields(rows)`` gives the pieces of each row's
    line, which is joined in Arrow and ends in a line break."""
    pieces = [head]
    for start in range(0, table.num_rows, WRITE_ROWS):
        fields, separator = line_fields(table.slice(start, WRITE_ROWS))
        fields[-1] = pc.binary_join_element_wise(fields[-1], "\n", "")
        pieces.append(_text_of(pc.binary_join_element_wise(*fields, separator)))
    return "".join(pieces)


def write_csv_text(table: pa.Table, kind: str | ExportKind) -> str:
    """The table (columns of ``schemas/<kind>.avsc``) as ethereum-etl CSV: a header line, then a row
    per record. The columns are ethereum-etl's, in its order, then block_hash and block_timestamp
    (token transfers), chain, status, retracted and publication; nulls are empty fields."""
    kind = export_kind(kind)

    def line_fields(rows: pa.Table):
        return [pc.fill_null(_text_column(rows, column, _csv_quoted), "") for column in kind.columns], ","

    return _write(table, line_fields, ",".join(kind.names) + "\n")


def write_json_lines(table: pa.Table, kind: str | ExportKind) -> str:
    """The table as ethereum-etl JSON lines: one object per record, ``type`` first as ethereum-etl
    writes it, then the columns ``write_csv_text`` writes. Integers are JSON numbers, except
    ``value``, a JSON string of its decimal digits (a uint256 would lose digits in many JSON readers);
    nulls are null."""
    kind = export_kind(kind)

    def line_fields(rows: pa.Table):
        fields = [pa.scalar(f'{{"type": "{kind.item_type}"', pa.string())]
        for column in kind.columns:
            values = pc.fill_null(_text_column(rows, column, _json_string), "null")
            fields.append(pc.binary_join_element_wise(f'"{column.name}": ', values, ""))
        fields[-1] = pc.binary_join_element_wise(fields[-1], "}", "")
        return fields, ", "

    return _write(table, line_fields)


# ---------------------------------------------------------------------- writing rows one at a time

TEXT_FORMATS = {"csv": "csv", "json": "json"}
"""Format -> file extension, as ethereum-etl names its files."""
JSON_STRING_INTEGERS = ("value", "difficulty", "total_difficulty")
"""Integers that can exceed what a double holds exactly: decimal strings in JSON lines, so every
JSON reader gets them exact."""


def row_writer(handle, text_format: str, columns: tuple[str, ...]) -> Callable[[dict | None], None]:
    """A function writing one row (a dict holding ``columns``; None writes nothing) to the text
    ``handle`` in ``text_format``. CSV starts with a header line; every integer is decimal digits,
    an absent value is empty and a list (a block's withdrawals) is a JSON array. JSON lines hold
    one object per row, ``JSON_STRING_INTEGERS`` as strings."""
    if text_format == "csv":
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)

        def write_csv(row):
            if row is not None:
                writer.writerow([_csv_value(row[column]) for column in columns])

        return write_csv
    if text_format != "json":
        raise ValueError(f"unknown format {text_format!r}; choose one of: {', '.join(TEXT_FORMATS)}")

    def write_json(row):
        if row is not None:
            shown = {c: str(row[c]) if c in JSON_STRING_INTEGERS and row[c] is not None else row[c] for c in columns}
            handle.write(json.dumps(shown, separators=(",", ":")) + "\n")

    return write_json


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
