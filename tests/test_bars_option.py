"""``--bars`` end to end through the installed command on the bundled Binance files: tick, volume
and dollar bars, each in its own table, equal bars cut from the files by an independent
reference; the run reconciles and validates whether or not it builds time bars; time bars are
the same with information bars beside them; a chunked run equals a whole one; a bad ``--bars``
is one line and exit 2."""

from __future__ import annotations

import json
import zipfile
from collections import defaultdict
from fractions import Fraction

import fastavro
import pyarrow.parquet as pq
import pytest

from io_connectors.bar_reader import final_bars, read_bars
from tests.support.commands import cryptobeam, run_backfill
from tests.support.paths import ROOT

INPUT = "data/XRPETH-aggTrades-*.zip"
BARS = ("--bars", "ticks:300", "--bars", "volume:2000", "--bars", "dollar:1.5")
DAY_MS = 86_400_000
PANE_FIELDS = {"pane_timing", "pane_index", "is_final", "file"}


def _trades() -> list[tuple]:
    """(time ms, agg id, price, qty, side) of every line of the bundled zips, read as plain text."""
    trades = []
    for path in sorted((ROOT / "data").glob("XRPETH-aggTrades-*.zip")):
        with zipfile.ZipFile(path) as archive:
            for line in archive.read(archive.namelist()[0]).decode().splitlines():
                agg_id, price, qty, _first, _last, time_ms, buyer_maker = line.split(",")[:7]
                trades.append(
                    (
                        int(time_ms),
                        agg_id,
                        float(price),
                        float(qty),
                        "sell" if buyer_maker.strip().lower() == "true" else "buy",
                    )
                )
    return trades


def _reference(kind: str, size: float) -> list[tuple]:
    """Per UTC day, trades ordered by (time, id) and cut one at a time, the crossing trade
    included: (day, ordinal, trade count, first id, last id, open, high, low, close, volume, reached)."""
    by_day = defaultdict(list)
    for trade in _trades():
        by_day[trade[0] // DAY_MS].append(trade)
    bars = []
    for day, trades in sorted(by_day.items()):
        trades.sort(key=lambda t: (t[0], len(t[1]), t[1]))
        groups, current, total = [], [], Fraction(0)
        for trade in trades:
            current.append(trade)
            total += {"ticks": 1, "volume": Fraction(trade[3]), "dollar": Fraction(trade[2] * trade[3])}[kind]
            if total >= Fraction(size):
                groups.append((current, True))
                current, total = [], Fraction(0)
        groups += [(current, False)] if current else []
        for ordinal, (group, reached) in enumerate(groups):
            prices = [t[2] for t in group]
            bars.append(
                (
                    day,
                    ordinal,
                    len(group),
                    group[0][1],
                    group[-1][1],
                    prices[0],
                    max(prices),
                    min(prices),
                    prices[-1],
                    float(sum(Fraction(t[3]) for t in group)),
                    reached,
                )
            )
    return bars


def _as_reference(bars: list[dict]) -> list[tuple]:
    from datetime import date

    return sorted(
        (
            (date.fromisoformat(b["day"]) - date(1970, 1, 1)).days,
            b["ordinal"],
            b["trade_count"],
            b["first_trade_id"],
            b["last_trade_id"],
            b["open"],
            b["high"],
            b["low"],
            b["close"],
            b["volume"],
            b["threshold_reached"],
        )
        for b in bars
    )


def _values(bars: list[dict]) -> list[dict]:
    return [{k: v for k, v in bar.items() if k not in PANE_FIELDS} for bar in bars]


@pytest.fixture(scope="module")
def information_only(tmp_path_factory):
    out = tmp_path_factory.mktemp("bars") / "out"
    result = run_backfill("binance-aggtrades", INPUT, out, *BARS, "--sink", "avro")
    assert result.returncode == 0, result.stderr
    return out, result


def test_each_kind_goes_to_its_own_table_and_equals_the_reference(information_only):
    out, _result = information_only
    assert not (out / "bars").exists()  # no time bars were asked for
    for kind, size in (("ticks", 300), ("volume", 2000), ("dollar", 1.5)):
        bars = final_bars(str(out), f"bars_{kind}")
        assert _as_reference(bars) == _reference(kind, size), kind
        assert {b["interval"] for b in bars} == {f"{kind}:{size}"}
    assert sum(b["trade_count"] for b in final_bars(str(out), "bars_ticks")) == len(_trades())


def test_an_information_only_run_reconciles_validates_and_writes_every_sink(information_only):
    out, result = information_only
    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert summary["reconciled"], summary["problems"]
    assert summary["trades_in_final_bars"] + summary["duplicates"] + summary["dead_letters"] == summary["records_in"]
    assert set(summary["rows_by_table"]) == {"bars_ticks", "bars_volume", "bars_dollar"}
    assert "bars_ticks" in result.stdout
    checked = cryptobeam("validate", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "bars_dollar" in checked.stdout
    # The Avro sink writes the same bars, as whole records of the information bar schema.
    avro_rows = []
    for path in sorted((out / "bars_ticks_avro").rglob("*.avro")):
        with open(path, "rb") as handle:
            avro_rows += list(fastavro.reader(handle))
    parquet_rows = read_bars(str(out), table="bars_ticks").to_pylist()
    assert len(avro_rows) == summary["rows_by_table"]["bars_ticks"] == len(parquet_rows)
    key = lambda b: (b["day"], b["ordinal"], b["pane_index"])  # noqa: E731
    assert [(key(b), b["close"], b["is_final"]) for b in sorted(avro_rows, key=key)] == [
        (key(b), b["close"], b["is_final"]) for b in sorted(parquet_rows, key=key)
    ]


@pytest.mark.pipeline
def test_time_bars_are_unchanged_by_information_bars_beside_them(tmp_path):
    plain, both = tmp_path / "plain", tmp_path / "both"
    for out, extra in ((plain, ()), (both, ("--bars", "time:1m", "--bars", "ticks:300"))):
        result = run_backfill("binance-aggtrades", INPUT, out, *extra)
        assert result.returncode == 0, result.stderr
    assert pq.read_table(both / "bars").equals(pq.read_table(plain / "bars"))
    summary = json.loads((both / "_SUMMARY.json").read_text())
    assert summary["reconciled"] and summary["bar_rows_written"] == summary["rows_by_table"]["bars"]
    assert summary["rows_by_table"]["bars_ticks"] == read_bars(str(both), table="bars_ticks").num_rows
    assert sum(b["trade_count"] for b in final_bars(str(both), "bars_ticks")) == summary["trades_in_final_bars"]


def test_a_chunked_run_cuts_whole_days_and_equals_a_whole_run(tmp_path, information_only):
    whole, _ = information_only
    out = tmp_path / "chunked"
    result = run_backfill("binance-aggtrades", INPUT, out, *BARS, "--chunk", "1d")
    assert result.returncode == 0, result.stderr
    assert len(list((out / "_manifests").glob("*.json"))) == 2
    for kind in ("ticks", "volume", "dollar"):
        assert _values(final_bars(str(out), f"bars_{kind}")) == _values(final_bars(str(whole), f"bars_{kind}"))


@pytest.mark.parametrize(
    "options, message",
    [
        (("--bars", "minutes:5"), "unknown bar kind 'minutes'"),
        (("--bars", "ticks:0"), "bad ticks bar size '0'"),
        (("--bars", "ticks:2.5"), "whole number"),
        (("--bars", "volume"), "use KIND:SIZE"),
        (("--bars", "ticks:10", "--bars", "ticks:20"), "--bars ticks is given twice"),
        (("--bars", "ticks:10", "--interval", "1w"), "information bars count from each UTC day's start"),
        (("--bars", "ticks:10", "--fill-gaps"), "--fill-gaps fills the empty windows of time bars"),
        (("--bars", "time:5m", "--interval", "1m"), "disagree"),
    ],
)
def test_a_bad_bars_option_is_one_line_and_exit_2(tmp_path, options, message):
    result = cryptobeam(
        "backfill", "--source", "binance-aggtrades", "--input", INPUT, *options, "--out", str(tmp_path / "out")
    )
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_accounting_checks_that_every_table_holds_every_trade(information_only):
    """A table that lost trades (as one did when Prism ran a split bundle's rest beside it) does not
    reconcile, though the first table does; a trade refused after its bars were final is accounted."""
    from beam_pipelines.accounting import Accounting

    out, _result = information_only
    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert set(summary["trades_by_table"].values()) == {summary["unique_trades"]}
    counts = {
        "records_in": 10,
        "unique_trades": 10,
        "trades_in_final_bars": 10,
        "dead_letters": 0,
        "table_trades.bars": 10,
        "table_trades.bars_ticks": 7,
    }
    assert Accounting.from_counters(counts).problems() == [
        "table bars_ticks: trades in final bars (7) != unique trades admitted to it (10)"
    ]
    refused = {
        **counts,
        "dead_letters.after_bars_final": 3,
        "dead_letters": 3,
        "dead_letter_rows_written": 3,
        "records_in": 13,
        "unique_trades": 13,
        "table_trades.bars": 13,
        "table_trades.bars_ticks": 10,
    }
    assert [p for p in Accounting.from_counters(refused).problems() if "bars_ticks" in p] == []
