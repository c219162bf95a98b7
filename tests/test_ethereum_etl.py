"""ethereum-etl exports of blocks and token transfers, CSV and JSON lines: what the writers write,
the parsers read back unchanged; uint256 values stay exact; every bad line is one dead letter with
its bytes, line number and reason; the columns are found by name, wherever they stand."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from io_connectors.files import line_batches
from io_connectors.formats.ethereum_etl import (
    BLOCK_EXPORT,
    HEADER_KEY,
    TOKEN_TRANSFER_EXPORT,
    parse_blocks,
    parse_export,
    parse_rows,
    parse_token_transfers,
    write_csv_text,
    write_json_lines,
)
from io_connectors.raw_batch import RawBatch
from io_connectors.source_formats import SourceFormat
from io_connectors.sources import read_raw_batches
from schemas import arrow_schema

USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
ALICE = "0x00000000000000000000000000000000000a11ce"
BOB = "0x0000000000000000000000000000000000000b0b"
TX = "0x" + "ab" * 32
BLOCK_HASH = "0x" + "cd" * 32
GENESIS = "0xd4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3"
ETL_TRANSFER_HEADER = "token_address,from_address,to_address,value,transaction_hash,log_index,block_number"
GOOD_TRANSFER = f"{USDT},{ALICE},{BOB},1000000,{TX},7,18000000"


def batch(text: str | bytes, source: str = "transfers.csv", first_line: int = 1, **extra) -> RawBatch:
    data = text.encode() if isinstance(text, str) else text
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return RawBatch(
        source=source,
        payloads=lines,
        line_numbers=np.arange(first_line, first_line + len(lines), dtype=np.int64),
        extra=dict(extra),
    )


def parse_text(text: str, kind, batch_rows: int = 1000, pass_header: bool = False):
    """Parse text as the file reader cuts it: batches of ``batch_rows`` lines, the header in the first only."""
    data = text.encode()
    tables, dead, header = [], [], None
    for lines, first in line_batches(data, batch_rows):
        extra = {HEADER_KEY: header} if pass_header and header is not None and first > 1 else {}
        raw = RawBatch(source="f", payloads=lines, line_numbers=np.arange(first, first + len(lines)), extra=extra)
        table, letters = parse_export(raw, kind)
        tables.append(table)
        dead.extend(letters)
        if first == 1 and len(lines):
            header = lines[0].as_py()
    return pa.concat_tables(tables) if tables else arrow_schema(kind.schema).empty_table(), dead


def reasons(dead: list[dict]) -> list[tuple[str, int]]:
    return [(letter["reason"], letter["source_offset"]) for letter in dead]


# ---------------------------------------------------------------------- generated contract rows

hex_digits = st.text(alphabet="0123456789abcdef", min_size=1, max_size=1)
addresses = st.lists(hex_digits, min_size=40, max_size=40).map(lambda d: "0x" + "".join(d))
hashes = st.lists(hex_digits, min_size=64, max_size=64).map(lambda d: "0x" + "".join(d))
uint256 = st.one_of(st.integers(0, 2**256 - 1), st.sampled_from([0, 1, 2**256 - 1, 2**255, 10**77]))
small = st.integers(0, 2**63 - 1)
seconds = st.integers(0, 253_402_300_799)
chains = st.sampled_from(["ethereum", "polygon", "arbitrum-one", "base_sepolia"])
statuses = st.sampled_from(["latest", "safe", "finalized"])
publications = st.one_of(st.integers(0, 3), small)


@st.composite
def transfer_rows(draw):
    block_hash = draw(st.one_of(st.none(), hashes))
    timestamp = draw(st.one_of(st.none(), seconds))
    log_index = draw(small)
    return {
        "chain": draw(chains),
        "token_address": draw(addresses),
        "from_address": draw(addresses),
        "to_address": draw(addresses),
        "value": str(draw(uint256)),
        "transaction_hash": draw(hashes),
        "log_index": log_index,
        "block_number": draw(small),
        "block_hash": block_hash,
        "block_timestamp": timestamp,
        "event_time": None if timestamp is None else timestamp * 1_000_000,
        "transfer_id": None if block_hash is None else f"{block_hash}_{log_index}",
        "status": draw(statuses),
        "retracted": draw(st.booleans()),
        "publication": draw(publications),
    }


@st.composite
def block_rows(draw):
    timestamp = draw(seconds)
    return {
        "chain": draw(chains),
        "number": draw(small),
        "hash": draw(hashes),
        "parent_hash": draw(hashes),
        "timestamp": timestamp,
        "miner": draw(addresses),
        "gas_used": draw(small),
        "gas_limit": draw(small),
        "base_fee_per_gas": draw(st.one_of(st.none(), small)),
        "transaction_count": draw(small),
        "event_time": timestamp * 1_000_000,
        "status": draw(statuses),
        "retracted": draw(st.booleans()),
        "publication": draw(publications),
    }


def table_of(rows: list[dict], schema_name: str) -> pa.Table:
    schema = arrow_schema(schema_name)
    return pa.Table.from_arrays(
        [pa.array([row[name] for row in rows], schema.field(name).type) for name in schema.names], schema=schema
    )


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(transfer_rows(), max_size=25),
    batch_rows=st.integers(1, 30),
    pass_header=st.booleans(),
)
def test_token_transfers_round_trip_through_csv_and_json(rows, batch_rows, pass_header):
    table = table_of(rows, "token_transfer")
    for text in (write_csv_text(table, "token_transfers"), write_json_lines(table, "token_transfers")):
        parsed, dead = parse_text(text, TOKEN_TRANSFER_EXPORT, batch_rows, pass_header)
        assert dead == []
        assert parsed.equals(table), (parsed.to_pylist(), rows)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(block_rows(), max_size=20), batch_rows=st.integers(1, 30))
def test_blocks_round_trip_through_csv_and_json(rows, batch_rows):
    table = table_of(rows, "block")
    for text in (write_csv_text(table, "blocks"), write_json_lines(table, "blocks")):
        parsed, dead = parse_text(text, BLOCK_EXPORT, batch_rows)
        assert dead == []
        assert parsed.equals(table)


def test_empty_tables_write_a_header_or_nothing_and_read_back_empty():
    for kind, schema in ((TOKEN_TRANSFER_EXPORT, "token_transfer"), (BLOCK_EXPORT, "block")):
        empty = arrow_schema(schema).empty_table()
        assert write_csv_text(empty, kind) == ",".join(kind.names) + "\n"
        assert write_json_lines(empty, kind) == ""
        for text in (write_csv_text(empty, kind), ""):
            parsed, dead = parse_text(text, kind)
            assert parsed.num_rows == 0 and dead == [] and parsed.schema.equals(empty.schema)


# ---------------------------------------------------------------------- exact values


@pytest.mark.parametrize(
    "written, kept",
    [
        ("0", "0"),
        ("000", "0"),
        ("007", "7"),
        (str(2**256 - 1), str(2**256 - 1)),
        ("0" * 30 + str(2**256 - 1), str(2**256 - 1)),
        (str(10**77), str(10**77)),
        (" 12 ", "12"),
    ],
)
def test_values_are_kept_exact_and_canonical(written, kept):
    table, dead = parse_token_transfers(batch(f"{ETL_TRANSFER_HEADER}\n{USDT},{ALICE},{BOB},{written},{TX},7,1\n"))
    assert dead == [] and table.column("value").to_pylist() == [kept]


@pytest.mark.parametrize(
    "written",
    [str(2**256), str(2**256 + 1), "9" * 78, "1" + "0" * 78, "-1", "1.0", "1e18", "0x10", "12a", "+5", "١٢"],
)
def test_values_outside_uint256_or_not_decimal_are_bad_values(written):
    line = f"{USDT},{ALICE},{BOB},{written},{TX},7,1"
    table, dead = parse_token_transfers(batch(f"{ETL_TRANSFER_HEADER}\n{line}\n"))
    assert table.num_rows == 0 and reasons(dead) == [("bad_value", 2)]
    assert dead[0]["payload_bytes"] == line.encode()


def json_transfer(value_json: str, **overrides) -> str:
    fields = {
        "type": '"token_transfer"',
        "token_address": f'"{USDT}"',
        "from_address": f'"{ALICE}"',
        "to_address": f'"{BOB}"',
        "value": value_json,
        "transaction_hash": f'"{TX}"',
        "log_index": "7",
        "block_number": "18000000",
    }
    fields.update(overrides)
    return "{" + ", ".join(f'"{name}": {value}' for name, value in fields.items()) + "}"


@pytest.mark.parametrize(
    "value_json, kept",
    [
        (str(2**256 - 1), str(2**256 - 1)),  # a bare JSON integer, as ethereum-etl writes it
        (f'"{2**256 - 1}"', str(2**256 - 1)),
        ("1e18", "1000000000000000000"),
        ("1.5e1", "15"),
        ("5.000", "5"),
        ("12345678901234567890000e-3", "12345678901234567890"),
        ("0", "0"),
        ("-0", "0"),
    ],
)
def test_json_numbers_are_read_exactly_never_through_a_float(value_json, kept):
    table, dead = parse_token_transfers(batch(json_transfer(value_json) + "\n", "t.json"))
    assert dead == [] and table.column("value").to_pylist() == [kept]


@pytest.mark.parametrize(
    "value_json, reason",
    [
        ("1.5", "bad_value"),
        ("12345678901234567890123e-3", "bad_value"),
        ("1e-3", "bad_value"),
        ("-1", "bad_value"),
        ("1e78", "bad_value"),
        ("1e100000", "bad_value"),
        ("true", "bad_value"),
        ('"1e18"', "bad_value"),
        ("null", "missing_field"),
        ("[1]", "malformed"),
    ],
)
def test_json_values_that_are_not_uint256_integers_are_dead_letters(value_json, reason):
    line = json_transfer(value_json)
    table, dead = parse_token_transfers(batch(line + "\n", "t.json"))
    assert table.num_rows == 0 and reasons(dead) == [(reason, 1)] and dead[0]["payload_bytes"] == line.encode()


# ---------------------------------------------------------------------- bad lines


def swap(index: int, text: str) -> str:
    fields = GOOD_TRANSFER.split(",")
    fields[index] = text
    return ",".join(fields)


BAD_CSV_LINES = [
    (swap(0, USDT[:-1]), "bad_address"),
    (swap(0, "0X" + USDT[2:]), "bad_address"),
    (swap(1, "0x" + "g" * 40), "bad_address"),
    (swap(2, ""), "missing_field"),
    (swap(3, ""), "missing_field"),
    (swap(3, "12 34"), "bad_value"),
    (swap(4, TX[:-2]), "bad_hash"),
    (swap(4, USDT), "bad_hash"),
    (swap(5, "x"), "malformed"),
    (swap(5, "-1"), "malformed"),
    (swap(6, "1.5"), "malformed"),
    (swap(6, "9" * 19), "malformed"),
    (swap(6, str(2**63)), "malformed"),
    (swap(6, "+5"), "malformed"),
    (GOOD_TRANSFER + ",extra", "malformed"),
    (GOOD_TRANSFER.rsplit(",", 1)[0], "malformed"),
    (f'{USDT},{ALICE},{BOB},"1,000",{TX},7,1', "bad_value"),
    (f'{USDT},{ALICE},{BOB},"1000,{TX},7,1', "malformed"),
]


@pytest.mark.parametrize("line, reason", BAD_CSV_LINES)
def test_each_bad_csv_line_is_one_dead_letter_with_its_bytes_and_reason(line, reason):
    text = f"{ETL_TRANSFER_HEADER}\n{GOOD_TRANSFER}\n{line}\n{GOOD_TRANSFER}\n"
    table, dead = parse_token_transfers(batch(text, "dump/transfers.csv"))
    assert table.num_rows == 2
    assert reasons(dead) == [(reason, 3)]
    assert dead[0]["payload_bytes"] == line.encode() and dead[0]["source"] == "dump/transfers.csv"
    assert dead[0]["stage"] == "parse" and dead[0]["error_message"]


def test_bad_utf8_is_a_bad_encoding_dead_letter_in_csv_and_json():
    bad_csv = GOOD_TRANSFER.encode().replace(b"1000000", b"10\xff00")
    bad_json = json_transfer('"\xff"').encode("latin-1")
    text = f"{ETL_TRANSFER_HEADER}\n".encode() + bad_csv + b"\n" + bad_json + b"\n" + GOOD_TRANSFER.encode() + b"\n"
    table, dead = parse_token_transfers(batch(text))
    assert table.num_rows == 1
    assert reasons(dead) == [("bad_encoding", 2), ("bad_encoding", 3)]
    assert [letter["payload_bytes"] for letter in dead] == [bad_csv, bad_json]


BAD_JSON_LINES = [
    ('{"token_address": ', "malformed"),
    ("{}", "missing_field"),
    ("{} {}", "malformed"),
    (json_transfer('"1"', type='"block"'), "malformed"),
    (json_transfer('"1"', type="null"), "malformed"),
    (json_transfer('{"amount": 1}'), "malformed"),
    (json_transfer('"1"', log_index="NaN"), "malformed"),
    (json_transfer('"1"', log_index="Infinity"), "malformed"),
    (json_transfer('"1"', log_index="true"), "malformed"),
    (json_transfer('"1"', log_index="1.5"), "malformed"),
    (json_transfer('"1"', block_number="-3"), "malformed"),
    (json_transfer('"1"', from_address='"\\ud800"'), "malformed"),
    (json_transfer('"1"', to_address="null"), "missing_field"),
    (json_transfer('"1"', to_address='"0x12"'), "bad_address"),
    (json_transfer('"1"', block_hash='"0x12"'), "bad_hash"),
    (json_transfer('"1"', block_timestamp='"tomorrow"'), "malformed"),
    (json_transfer('"1"', block_timestamp='"2023-02-30 00:00:00 UTC"'), "malformed"),
    (json_transfer('"1"', block_timestamp="-1"), "malformed"),
    (json_transfer('"1"', block_timestamp="253402300800"), "malformed"),
    (json_transfer('"1"', status='"pending"'), "unknown_status"),
    (json_transfer('"1"', chain='"Bad Chain"'), "malformed"),
    (json_transfer('"1"', retracted='"maybe"'), "malformed"),
    (json_transfer('"1"', log_index="1" + "0" * 5000), "malformed"),
    ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "malformed"),
]


@pytest.mark.parametrize("line, reason", BAD_JSON_LINES)
def test_each_bad_json_line_is_one_dead_letter_with_its_bytes_and_reason(line, reason):
    good = json_transfer('"5"')
    table, dead = parse_token_transfers(batch(f"{good}\n{line}\n{good}\n", "stream.json", first_line=41))
    assert table.num_rows == 2
    assert reasons(dead) == [(reason, 42)]
    assert dead[0]["payload_bytes"] == line.encode() and dead[0]["source"] == "stream.json"


def test_a_header_without_a_needed_column_is_reported_once_and_its_rows_each_say_why():
    text = "token_address,from_address,to_address,transaction_hash,log_index,block_number\n"
    text += f"{USDT},{ALICE},{BOB},{TX},1,2\n{USDT},{ALICE},{BOB},{TX},2,2\n"
    table, dead = parse_token_transfers(batch(text))
    assert table.num_rows == 0
    assert reasons(dead) == [("unexpected_header", 1), ("missing_field", 2), ("missing_field", 3)]
    assert "value" in dead[0]["error_message"] and dead[0]["payload_bytes"] == text.split("\n")[0].encode()


def test_a_header_naming_a_column_twice_is_unusable():
    text = f"{ETL_TRANSFER_HEADER},value\n{GOOD_TRANSFER},5\n"
    table, dead = parse_token_transfers(batch(text))
    assert table.num_rows == 0 and reasons(dead) == [("unexpected_header", 1), ("malformed", 2)]


def test_blank_lines_and_a_byte_order_mark_are_not_records():
    table, dead = parse_token_transfers(batch(f"\ufeff{ETL_TRANSFER_HEADER}\n\n{GOOD_TRANSFER}\n   \n"))
    assert table.num_rows == 1 and dead == []
    table, dead = parse_token_transfers(batch("\ufeff" + json_transfer('"1"') + "\n\n", "t.json"))
    assert table.num_rows == 1 and dead == []


def test_parse_options_are_checked():
    with pytest.raises(ValueError, match="status"):
        parse_token_transfers(batch(GOOD_TRANSFER), status="pending")
    with pytest.raises(ValueError, match="chain"):
        parse_token_transfers(batch(GOOD_TRANSFER), chain="Ethereum Mainnet")
    with pytest.raises(ValueError, match="unknown ethereum-etl export"):
        parse_export(batch(GOOD_TRANSFER), "traces")


# ---------------------------------------------------------------------- columns, defaults, joins


def test_ethereum_etl_transfers_lack_the_block_so_their_id_and_time_wait_for_the_join():
    table, dead = parse_token_transfers(batch(f"{ETL_TRANSFER_HEADER}\n{GOOD_TRANSFER}\n"))
    assert dead == []
    assert table.to_pylist() == [
        {
            "chain": "ethereum",
            "token_address": USDT,
            "from_address": ALICE,
            "to_address": BOB,
            "value": "1000000",
            "transaction_hash": TX,
            "log_index": 7,
            "block_number": 18000000,
            "block_hash": None,
            "block_timestamp": None,
            "event_time": None,
            "transfer_id": None,
            "status": "finalized",
            "retracted": False,
            "publication": 0,
        }
    ]
    assert table.schema.equals(arrow_schema("token_transfer"))


def test_columns_in_any_order_extra_columns_ignored_mixed_case_lowered():
    header = "block_timestamp,item_id,log_index,value,to_address,block_hash,from_address,transaction_hash,"
    header += "token_address,block_number,chain,status"
    line = f"1693051200,x_1,3,42,{BOB.upper().replace('0X', '0x')},{BLOCK_HASH.upper().replace('0X', '0x')},"
    line += f"{ALICE},{TX},0xdAC17F958D2ee523a2206206994597C13D831ec7,18000000,Polygon,LATEST"
    table, dead = parse_token_transfers(batch(f"{header}\n{line}\n"))
    assert dead == []
    row = table.to_pylist()[0]
    assert (row["token_address"], row["to_address"], row["block_hash"]) == (USDT, BOB, BLOCK_HASH)
    assert (row["chain"], row["status"], row["log_index"], row["value"]) == ("polygon", "latest", 3, "42")
    assert row["block_timestamp"] == 1693051200 and row["event_time"].timestamp() == 1693051200
    assert row["transfer_id"] == f"{BLOCK_HASH}_3"


def test_the_callers_chain_and_status_apply_where_the_file_says_nothing():
    text = f"{ETL_TRANSFER_HEADER},chain,status\n{GOOD_TRANSFER},,\n{GOOD_TRANSFER},optimism,safe\n"
    table, dead = parse_token_transfers(batch(text), chain="base", status="latest")
    assert dead == []
    assert table.column("chain").to_pylist() == ["base", "optimism"]
    assert table.column("status").to_pylist() == ["latest", "safe"]


def test_bigquery_text_timestamps_are_read_as_seconds():
    header = f"{ETL_TRANSFER_HEADER},block_hash,block_timestamp"
    rows = [
        f"{GOOD_TRANSFER},{BLOCK_HASH},2023-08-26 12:00:00 UTC",
        f"{GOOD_TRANSFER},{BLOCK_HASH},2024-02-29 23:59:59.000000 UTC",
        f"{GOOD_TRANSFER},{BLOCK_HASH},1970-01-01 00:00:00 UTC",
    ]
    table, dead = parse_token_transfers(batch("\n".join([header, *rows]) + "\n"))
    assert dead == []
    assert table.column("block_timestamp").to_pylist() == [1693051200, 1709251199, 0]


def test_batches_after_the_first_find_columns_by_the_files_header_or_by_ethereum_etls_order():
    custom = "log_index,block_number,token_address,from_address,to_address,value,transaction_hash"
    line = f"7,18000000,{USDT},{ALICE},{BOB},99,{TX}"
    raw = batch(f"{line}\n", first_line=5, **{HEADER_KEY: custom.encode()})
    table, dead = parse_token_transfers(raw)
    assert dead == [] and table.column("value").to_pylist() == ["99"]
    # Without the header a 7-field line is in ethereum-etl's own order.
    table, dead = parse_token_transfers(batch(f"{GOOD_TRANSFER}\n", first_line=5))
    assert dead == [] and table.column("log_index").to_pylist() == [7]
    table, dead = parse_token_transfers(batch("1,2,3\n", first_line=5))
    assert reasons(dead) == [("malformed", 5)] and "7 or 12 or 13 fields" in dead[0]["error_message"]


def test_the_publication_column_is_optional_zero_where_absent_and_read_where_given():
    header = f"{ETL_TRANSFER_HEADER},block_hash,block_timestamp,retracted,publication"
    lines = [
        f"{GOOD_TRANSFER},{BLOCK_HASH},1693051200,false,2",
        f"{GOOD_TRANSFER},{BLOCK_HASH},1693051200,true,",
        f"{GOOD_TRANSFER},{BLOCK_HASH},1693051200,false,-1",
        f"{GOOD_TRANSFER},{BLOCK_HASH},1693051200,false,one",
    ]
    table, dead = parse_token_transfers(batch("\n".join([header, *lines]) + "\n"))
    assert table.column("publication").to_pylist() == [2, 0]
    assert table.column("retracted").to_pylist() == [False, True]
    assert reasons(dead) == [("malformed", 4), ("malformed", 5)] and "publication" in dead[0]["error_message"]
    etl, _ = parse_token_transfers(batch(f"{ETL_TRANSFER_HEADER}\n{GOOD_TRANSFER}\n"))
    assert etl.column("publication").to_pylist() == [0]  # ethereum-etl writes no such column
    json_line = json.dumps(
        {"type": "token_transfer", **dict(zip(ETL_TRANSFER_HEADER.split(","), GOOD_TRANSFER.split(",")))}
    )
    from_json, dead = parse_token_transfers(batch(json_line + "\n"))
    assert dead == [] and from_json.column("publication").to_pylist() == [0]
    # A headerless batch of a file this module wrote before it wrote the column: 12 fields.
    written = write_csv_text(table, "token_transfers").splitlines()[1]
    earlier = written.rsplit(",", 1)[0]
    for line, publication in ((written, 2), (earlier, 0)):
        headerless, dead = parse_token_transfers(batch(f"{line}\n", first_line=9))
        assert dead == [] and headerless.column("publication").to_pylist() == [publication]
        assert headerless.column("block_hash").to_pylist() == [BLOCK_HASH]


def test_csv_and_json_exports_of_the_same_transfers_give_the_same_table():
    etl_csv = f"{ETL_TRANSFER_HEADER},block_hash,block_timestamp\n"
    etl_json = ""
    for i in range(5):
        value = 2**256 - 1 - i
        etl_csv += f"{USDT},{ALICE},{BOB},{value},{TX},{i},18000000,{BLOCK_HASH},1693051200\n"
        # ethereum-etl's stream JSON: a bare integer value, its own extra fields.
        etl_json += json.dumps(
            {
                "type": "token_transfer",
                "token_address": USDT,
                "from_address": ALICE,
                "to_address": BOB,
                "value": value,
                "transaction_hash": TX,
                "log_index": i,
                "block_number": 18000000,
                "block_timestamp": 1693051200,
                "block_hash": BLOCK_HASH,
                "item_id": f"token_transfer_{TX}_{i}",
                "item_timestamp": "2023-08-26T12:00:00Z",
            }
        )
        etl_json += "\n"
    from_csv, dead_csv = parse_token_transfers(batch(etl_csv))
    from_json, dead_json = parse_token_transfers(batch(etl_json, "t.json"))
    assert dead_csv == dead_json == []
    assert from_csv.num_rows == 5 and from_csv.equals(from_json)
    assert from_csv.column("value").to_pylist()[0] == str(2**256 - 1)


@st.composite
def damaged_exports(draw):
    """A written export (CSV or JSON lines) with some of its lines damaged: bytes replaced,
    inserted or cut, lines joined or emptied."""
    rows = draw(st.lists(transfer_rows(), min_size=1, max_size=8))
    write = draw(st.sampled_from([write_csv_text, write_json_lines]))
    lines = write(table_of(rows, "token_transfer"), "token_transfers").encode().split(b"\n")[:-1]
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        at = draw(st.integers(0, len(line)))
        junk = draw(st.binary(min_size=1, max_size=4) | st.sampled_from([b",", b'"', b"{", b"}", b"\xff", b" "]))
        lines[i] = (
            draw(
                st.sampled_from(
                    [
                        line[:at] + junk + line[at:],
                        line[:at] + junk + line[at + len(junk) :],
                        line[:at],
                        line[at:],
                        b"",
                        line + b"," + line,
                    ]
                )
            )
            .replace(b"\n", b"")
            .replace(b"\r", b"")
        )
    return lines


@settings(max_examples=100, deadline=None)
@given(lines=damaged_exports(), batch_rows=st.integers(1, 10))
def test_every_line_of_a_damaged_export_is_a_row_or_one_dead_letter(lines, batch_rows):
    """Never a crash, never a silent drop: each line that is not blank (nor a usable header)
    becomes one row or one dead letter carrying its bytes."""
    seen: Counter = Counter()
    for first in range(0, len(lines), batch_rows):
        chunk = lines[first : first + batch_rows]
        raw = RawBatch(source="f", payloads=chunk, line_numbers=np.arange(first + 1, first + 1 + len(chunk)))
        parsed = parse_rows(raw, "token_transfers")
        assert parsed.table.num_rows == len(parsed.line_numbers) == len(parsed.payloads)
        seen.update(parsed.line_numbers.tolist())
        for letter in parsed.dead_letters:
            seen[letter["source_offset"]] += 1
            assert letter["payload_bytes"] == lines[letter["source_offset"] - 1] and letter["reason"]
        for number, payload in zip(parsed.line_numbers.tolist(), parsed.payloads.to_pylist()):
            assert payload == lines[number - 1]
    for number, line in enumerate(lines, start=1):
        if re.search(rb"[!-~]", line) and number > 1:
            assert seen[number] == 1, (number, line)
        else:
            assert seen[number] <= 1, (number, line)


def test_lines_of_both_kinds_in_one_batch_come_out_in_line_order():
    text = f"{ETL_TRANSFER_HEADER}\n{swap(5, '1')}\n{json_transfer(chr(34) + '5' + chr(34), log_index='2')}\n"
    text += f"{swap(5, '3')}\n"
    table, dead = parse_token_transfers(batch(text))
    assert dead == [] and table.column("log_index").to_pylist() == [1, 2, 3]


def test_parsed_rows_say_which_line_each_row_came_from():
    lines = [
        ETL_TRANSFER_HEADER,
        swap(5, "1"),
        "",
        swap(5, "x"),
        json_transfer('"5"', log_index="2"),
        f'{USDT},{ALICE},{BOB},"3",{TX},3,18000000',
        "{broken",
        swap(5, "4"),
    ]
    parsed = parse_rows(batch("\n".join(lines) + "\n", first_line=1), "token_transfers")
    assert parsed.table.column("log_index").to_pylist() == [1, 2, 3, 4]
    assert parsed.line_numbers.tolist() == [2, 5, 6, 8]
    assert parsed.payloads.to_pylist() == [lines[i - 1].encode() for i in (2, 5, 6, 8)]
    assert reasons(parsed.dead_letters) == [("malformed", 4), ("malformed", 7)]
    empty = parse_rows(batch("\n\n", first_line=9), "blocks")
    assert empty.table.num_rows == 0 and len(empty.line_numbers) == len(empty.payloads) == 0


# ---------------------------------------------------------------------- blocks

ETL_BLOCK_HEADER = (
    "number,hash,parent_hash,nonce,sha3_uncles,logs_bloom,transactions_root,state_root,receipts_root,miner,"
    "difficulty,total_difficulty,size,extra_data,gas_limit,gas_used,timestamp,transaction_count,base_fee_per_gas,"
    "withdrawals_root,withdrawals,blob_gas_used,excess_blob_gas"
)
ZERO_HASH = "0x" + "0" * 64
ZERO_ADDRESS = "0x" + "0" * 40
GENESIS_ROW = (
    f"0,{GENESIS},{ZERO_HASH},0x0000000000000042,"
    "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347,0x" + "0" * 512 + ","
    "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421,"
    "0xd7f8974fb5ac78d9ac099b9ad5018bedc2ce0a72dad1827a1709da30580f0544,"
    "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421,"
    f"{ZERO_ADDRESS},17179869184,17179869184,540,"
    "0x11bbe8db4e347b4e8c937c1c8370e4b5ed33adb3db69cbdb7a38e1e50b1b82fa,5000,0,0,0,,,,,"
)
SHANGHAI_ROW = (
    f"17034870,{BLOCK_HASH},{GENESIS},0x0000000000000000,{ZERO_HASH},0x00,{ZERO_HASH},{ZERO_HASH},{ZERO_HASH},"
    f"{ALICE},0,58750003716598352816469,246,0x6265617665726275696c642e6f7267,30000000,14933148,1681338455,140,"
    f"39774069707,{TX},"
    "\"{'index': 0, 'validator_index': 233046, 'address': '0x2f6af6f8d7f2ba3c8b9d0c3c5d5e6f7a8b9c0d1e', "
    "'amount': 3770479},{'index': 1, 'validator_index': 233047, "
    "'address': '0x2f6af6f8d7f2ba3c8b9d0c3c5d5e6f7a8b9c0d1e', "
    "'amount': 3771013}\",,"
)


def test_an_ethereum_etl_blocks_export_with_every_column_parses():
    table, dead = parse_blocks(batch(f"{ETL_BLOCK_HEADER}\n{GENESIS_ROW}\n{SHANGHAI_ROW}\n", "blocks.csv"))
    assert dead == []
    genesis, shanghai = table.to_pylist()
    assert (genesis["number"], genesis["hash"], genesis["timestamp"], genesis["gas_limit"]) == (0, GENESIS, 0, 5000)
    assert genesis["base_fee_per_gas"] is None and genesis["transaction_count"] == 0
    assert (shanghai["parent_hash"], shanghai["base_fee_per_gas"], shanghai["gas_used"]) == (
        GENESIS,
        39774069707,
        14933148,
    )
    assert shanghai["event_time"].timestamp() == 1681338455
    assert (shanghai["chain"], shanghai["status"], shanghai["retracted"]) == ("ethereum", "finalized", False)
    assert table.schema.equals(arrow_schema("block"))


def test_a_blocks_export_read_in_small_batches_finds_its_columns_by_ethereum_etls_order(tmp_path):
    """The real reader, gzip and all: only the first batch holds the header."""
    path = tmp_path / "blocks_00000000_00000099.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(f"{ETL_BLOCK_HEADER}\n{GENESIS_ROW}\n{SHANGHAI_ROW}\n{SHANGHAI_ROW}\n{GENESIS_ROW}\nnot,a,block\n")
    source = SourceFormat("ethereum-etl-blocks", "test", parse_blocks, "text", None)
    tables, dead = [], []
    for raw in read_raw_batches(source, str(path), batch_rows=2):
        table, letters = parse_blocks(raw)
        tables.append(table)
        dead.extend(letters)
    assert [row["number"] for row in pa.concat_tables(tables).to_pylist()] == [0, 17034870, 17034870, 0]
    assert reasons(dead) == [("malformed", 6)] and dead[0]["payload_bytes"] == b"not,a,block"


def test_bad_block_lines_are_dead_letters():
    table = pa.Table.from_pylist(
        [
            {
                "chain": "ethereum",
                "number": 1,
                "hash": BLOCK_HASH,
                "parent_hash": GENESIS,
                "timestamp": 1438269988,
                "miner": ALICE,
                "gas_used": 0,
                "gas_limit": 5000,
                "base_fee_per_gas": None,
                "transaction_count": 0,
                "event_time": 1438269988 * 1_000_000,
                "status": "finalized",
                "retracted": False,
                "publication": 0,
            }
        ],
        schema=arrow_schema("block"),
    )
    header, good = write_csv_text(table, "blocks").splitlines()
    bad = [
        (good.replace(ALICE, ALICE[:-1]), "bad_address"),
        (good.replace(GENESIS, "0x00"), "bad_hash"),
        (good.replace("1438269988", "-5"), "malformed"),
        (good.replace(",5000,", ",,"), "missing_field"),
        (good.replace("finalized", "orphaned"), "unknown_status"),
    ]
    text = "\n".join([header, good] + [line for line, _ in bad]) + "\n"
    parsed, dead = parse_blocks(batch(text, "blocks.csv"))
    assert parsed.num_rows == 1
    assert reasons(dead) == [(reason, line) for line, (_, reason) in enumerate(bad, start=3)]
    assert [letter["payload_bytes"] for letter in dead] == [line.encode() for line, _ in bad]


def test_writers_write_ethereum_etls_columns_first_and_its_json_item_type():
    table, _ = parse_token_transfers(batch(f"{ETL_TRANSFER_HEADER}\n{GOOD_TRANSFER}\n"))
    text = write_csv_text(table, "token_transfers")
    assert text.startswith(ETL_TRANSFER_HEADER + ",block_hash,block_timestamp,chain,status,retracted,publication\n")
    assert text.splitlines()[1] == GOOD_TRANSFER + ",,,ethereum,finalized,false,0"
    record = json.loads(write_json_lines(table, "token_transfer"))
    assert record["type"] == "token_transfer" and record["value"] == "1000000" and record["log_index"] == 7
    assert record["block_hash"] is None and list(record)[1:8] == ETL_TRANSFER_HEADER.split(",")


def test_writers_quote_and_escape_text_that_needs_it():
    table, _ = parse_token_transfers(batch(f"{ETL_TRANSFER_HEADER}\n{GOOD_TRANSFER}\n"))
    row = table.set_column(0, "chain", pa.array(['odd,"chain"\n']))
    csv_text, json_text = write_csv_text(row, "token_transfers"), write_json_lines(row, "token_transfers")
    assert '"odd,""chain""\n"' in csv_text
    assert json.loads(json_text)["chain"] == 'odd,"chain"\n'
