"""Address labels (--labels FILE): a good file maps lower-case addresses to label and entity; a
file of the wrong shape is one clear one-line error; a row that cannot be a label is skipped with a
one-line warning, as io_connectors/address_labels.py's table says."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from io_connectors.address_labels import (
    MAX_WARNINGS_SHOWN,
    AddressLabel,
    LabelsError,
    parse_labels,
    read_labels_file,
)

HEADER = "address,label,entity"
HOT = "0x28c6c06298d514db089934071355e5743bf21d60"
COLD = "0x" + "c0" * 20
ROUTER = "0x" + "ab" * 20


def write(directory, content: str | bytes, name: str = "labels.csv") -> str:
    path = directory / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return str(path)


def test_a_good_file_maps_lower_case_addresses_to_label_and_entity(tmp_path):
    checksummed = "0x28C6c06298d514Db089934071355E5743bf21d60"
    text = f"\ufeff Address , LABEL,entity\n{checksummed},Binance 14,Binance\n\n{COLD}, cold wallet ,\n"
    labels = read_labels_file(write(tmp_path, text))
    assert labels.labels == {HOT: AddressLabel("Binance 14", "Binance"), COLD: AddressLabel("cold wallet", None)}
    assert labels.warnings == [] and labels.skipped == 0
    label, entity = labels.label_columns(pa.array([HOT, ROUTER, COLD, None]))
    assert label.to_pylist() == ["Binance 14", None, "cold wallet", None]
    assert entity.to_pylist() == ["Binance", None, None, None]


STOPS = {
    "empty file": ("", "labels.csv: empty, expected the header address,label,entity"),
    "blank lines only": ("\n  \n\n", "labels.csv: empty, expected the header"),
    "missing header": (f"{HOT},Binance 14,Binance\n", "labels.csv line 1: expected the header address,label,entity"),
    "wrong columns": ("address,name\n", "line 1: expected the header address,label,entity, got 'address,name'"),
    "columns in another order": ("label,address,entity\n", "line 1: expected the header"),
    "a row of two fields": (
        f"{HEADER}\n{HOT},Binance 14,Binance\n{COLD},cold\n",
        "line 3: expected address,label,entity, got 2",
    ),
    "a row of four fields": (f"{HEADER}\n{HOT},Binance 14,Binance,x\n", "line 2: expected address,label,entity, got 4"),
    "conflicting entity": (
        f"{HEADER}\n{HOT},Binance 14,Binance\n{COLD},cold,\n{HOT.upper().replace('0X', '0x')},Hot,Coinbase\n",
        f"labels.csv line 4: {HOT} is listed again with entity 'Coinbase', line 2 gives 'Binance'",
    ),
    "entity given then left out": (
        f"{HEADER}\n{HOT},Binance 14,Binance\n{HOT},Binance 14,\n",
        "line 3: " + HOT + " is listed again with entity '', line 2 gives 'Binance'",
    ),
    "not UTF-8": (
        f"{HEADER}\n{HOT},Binance 14,Binance\n".encode() + b"0x12,\xff\xfe,x\n",
        "labels.csv line 3: not UTF-8",
    ),
    "UTF-16": ((HEADER + "\n").encode("utf-16"), "line 1: not UTF-8"),
    "NUL byte": (f"{HEADER}\n{HOT},Bin\x00ance,Binance\n", "labels.csv line 2: holds a NUL byte"),
    "unterminated quote": (f'{HEADER}\n{HOT},"Binance 14,Binance\n', "not CSV"),
    "huge line": (f"{HEADER}\n{HOT},{'x' * 500_000},Binance\n", "line 2: not CSV: field larger than field limit"),
    "huge line without commas": (f"{HEADER}\n{'x' * 500_000}\n", "line 2: not CSV: field larger than field limit"),
    "a binary file": (bytes(range(256)) * 4, "labels.csv line 2: not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(STOPS))
def test_a_file_of_the_wrong_shape_is_one_clear_error(tmp_path, case):
    content, expected = STOPS[case]
    with pytest.raises(LabelsError) as error:
        read_labels_file(write(tmp_path, content))
    message = str(error.value)
    assert expected in message and "\n" not in message and message.startswith("labels.csv")


@pytest.mark.parametrize("case", ["directory", "missing", "too large"])
def test_a_path_that_is_no_label_list_is_one_clear_error(tmp_path, case, monkeypatch):
    path = tmp_path / "labels.csv"
    if case == "directory":
        path.mkdir()
    if case == "too large":
        monkeypatch.setattr("io_connectors.address_labels.MAX_FILE_BYTES", 1024)
        path.write_text(HEADER + "\n" + f"{HOT},Binance 14,Binance\n" * 100)
    expected = {"directory": "is a directory", "missing": "no such file", "too large": "larger than"}[case]
    with pytest.raises(LabelsError, match=expected):
        read_labels_file(str(path))


SKIPS = {
    "short address": (f"{HOT[:-1]},x,y", "address '" + HOT[:-1] + "' is not 0x and 40 hex digits"),
    "no 0x": (f"{HOT[2:]}00,x,y", "is not 0x and 40 hex digits"),
    "not hex": ("0x" + "zz" * 20 + ",x,y", "is not 0x and 40 hex digits"),
    "an ENS name": ("vitalik.eth,Vitalik,", "address 'vitalik.eth' is not 0x and 40 hex digits"),
    "empty label": (f"{ROUTER},,Uniswap", "label is empty"),
    "long label": (f"{ROUTER},{'x' * 201},Uniswap", "label is longer than 200 characters"),
    "control character": (f"{ROUTER},Uni\x1bswap,Uniswap", "label holds a control character"),
    "another label": (
        f"{HOT},Binance Hot,Binance",
        f"{HOT} is listed again as 'Binance Hot', line 2 gives 'Binance 14'",
    ),
}


@pytest.mark.parametrize("case", sorted(SKIPS))
def test_a_row_that_cannot_be_a_label_is_skipped_with_one_warning(tmp_path, case):
    row, expected = SKIPS[case]
    labels = read_labels_file(write(tmp_path, f"{HEADER}\n{HOT},Binance 14,Binance\n{row}\n{COLD},cold,\n"))
    assert labels.labels[HOT] == AddressLabel("Binance 14", "Binance") and COLD in labels.labels
    assert labels.skipped == 1 and len(labels.warnings) == 1
    warning = labels.warnings[0]
    assert warning.startswith("labels.csv line 3: ") and expected in warning and warning.endswith("row skipped")
    assert "\n" not in warning and labels.warning_lines() == labels.warnings


def test_exact_repeats_are_taken_once_without_a_warning():
    labels = parse_labels(f"{HEADER}\n{HOT},Binance 14,Binance\n{HOT},Binance 14,Binance\n", "labels.csv")
    assert len(labels.labels) == 1 and labels.warnings == [] and labels.repeated == 1


def test_many_bad_rows_show_a_bounded_number_of_warnings_and_count_the_rest():
    rows = "\n".join(f"0x{i:039x},label {i},x" for i in range(MAX_WARNINGS_SHOWN + 30))
    labels = parse_labels(f"{HEADER}\n{rows}\n{HOT},Binance 14,Binance\n", "labels.csv")
    assert list(labels.labels) == [HOT] and labels.skipped == MAX_WARNINGS_SHOWN + 30
    assert len(labels.warnings) == MAX_WARNINGS_SHOWN
    assert labels.warning_lines()[-1] == "... and 30 more row(s) skipped"


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.lists(st.lists(st.text(st.characters(codec="utf-8"), max_size=45), max_size=4), max_size=6).map(
            lambda rows: HEADER + "\n" + "\n".join(",".join(r) for r in rows)
        ),
        st.lists(st.tuples(st.sampled_from([HOT, COLD, ROUTER, "0x12"]), st.text(max_size=5), st.text(max_size=3))).map(
            lambda rows: HEADER + "\n" + "\n".join(",".join(r) for r in rows)
        ),
    )
)
def test_any_file_reads_or_is_one_labels_error(tmp_path_factory, content):
    path = write(tmp_path_factory.mktemp("any"), content)
    try:
        labels = read_labels_file(path)
    except LabelsError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert all(address == address.lower() and len(address) == 42 for address in labels.labels)
        assert all(label.label and label.label.isprintable() for label in labels.labels.values())
        assert all("\n" not in line for line in labels.warning_lines())
