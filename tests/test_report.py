"""``cryptobeam report OUT`` through the installed command, looked at in a real headless browser.

Debian's Chromium (/usr/bin/chromium), driven by playwright, opens the page from file:// with
every network request refused: no console or page error, one rendered plotly chart per expected
chart, and a screenshot kept as a test artifact (under $CRYPTOBEAM_TEST_ARTIFACTS if set, else the
test's tmp_path). The numbers the page shows are checked against independent readings of the
output: the accounting table against _SUMMARY.json, the downsampled candles and trade counts
against a duckdb aggregation of the bar files, gap markers against the missing minutes, the
consolidated charts' exclusions against the run's counts. The downsampling function is checked
against a plain-Python reference by hypothesis. Bad directories give one line and exit 2.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipelines.report import downsample
from tests.support.commands import cryptobeam
from tests.support.helpers import CONSOLIDATED_BESIDE_TIME_BARS, three_venue_trades, write_three_venue_inputs
from tests.support.paths import ROOT

CHROMIUM = "/usr/bin/chromium"
MINUTE = 60_000_000


def backfill(out: Path, *options: str) -> Path:
    result = cryptobeam("backfill", *options, "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def report(out: Path, *options: str) -> str:
    result = cryptobeam("report", str(out), *options)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"report written: {out}/report.html (")
    return lines[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    """The bundled days, and a file of the first day's first trades again (duplicates) with two
    lines that do not parse (dead letters)."""
    folder = tmp_path_factory.mktemp("inputs")
    with zipfile.ZipFile(ROOT / "data" / "XRPETH-aggTrades-2019-10-11.zip") as archive:
        lines = archive.read(archive.namelist()[0]).decode().splitlines()
    (folder / "XRPETH-aggTrades-2019-10-11.csv").write_text(
        "\n".join(lines[:25] + ["1,oops,1,1,1,1,True,True", "x,y"]) + "\n"
    )
    return [
        "--source",
        "binance-aggtrades",
        "--input",
        "data/XRPETH-aggTrades-*.zip",
        "--input",
        str(folder / "XRPETH-aggTrades-2019-10-11.csv"),
        "--interval",
        "1m",
    ]


@pytest.fixture(scope="module")
def filled_out(tmp_path_factory, inputs) -> Path:
    return backfill(tmp_path_factory.mktemp("filled") / "out", *inputs, "--fill-gaps")


@pytest.fixture(scope="module")
def gappy_out(tmp_path_factory, inputs) -> Path:
    return backfill(tmp_path_factory.mktemp("gappy") / "out", *inputs)


@pytest.fixture(scope="module")
def consolidated_out(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("venues")
    start = datetime(2024, 1, 1, 23, 30, tzinfo=timezone.utc)
    drift = (start + timedelta(minutes=20), start + timedelta(minutes=35))
    venues = three_venue_trades(4, start, 3600, drift, steps=(1.5, 2.0, 3.25, 4.0), amounts=(0.01, 0.25, 0.5, 1.5))
    return backfill(
        folder / "out",
        *write_three_venue_inputs(folder, venues),
        *CONSOLIDATED_BESIDE_TIME_BARS,
    )


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


class Page:
    """A report opened offline: what the console and the page said, and the charts' data."""

    def __init__(self, browser, out: Path, screenshot: Path):
        self.problems, self.requests = [], []
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.on(
            "console",
            lambda message: (
                self.problems.append(f"console {message.type}: {message.text}")
                if message.type in ("error", "warning")
                else None
            ),
        )
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

        def refuse_network(route):
            if route.request.url.startswith("file://"):
                return route.continue_()
            self.requests.append(route.request.url)
            return route.abort()

        self.page.route("**/*", refuse_network)
        self.page.goto((out / "report.html").as_uri(), wait_until="load")
        self.page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')].every(d => d._fullLayout)")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(screenshot), full_page=True)

    def charts(self) -> dict[str, int]:
        """Chart id -> its rendered plotly SVGs that hold drawn traces."""
        return self.page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.js-plotly-plot')].map(
            d => [d.id, d.querySelectorAll('.main-svg .cartesianlayer .trace').length]))""")

    def traces(self, chart_id: str) -> list[dict]:
        """The chart's traces as the page holds them; numeric arrays come as plotly's typed-array
        specs (dtype and base64 bytes), decoded here."""
        traces = self.page.evaluate(
            """id => document.getElementById(id).data.map(t => Object.fromEntries(
            ['name', 'type', 'x', 'y', 'open', 'high', 'low', 'close', 'customdata'].filter(k => t[k] !== undefined)
            .map(k => [k, t[k].bdata !== undefined || typeof t[k] === 'string' ? t[k] : Array.from(t[k])])))""",
            chart_id,
        )
        return [{key: _decoded(value) for key, value in trace.items()} for trace in traces]

    def title(self, chart_id: str) -> str:
        return self.page.evaluate("id => document.getElementById(id).layout.title.text", chart_id)

    def close(self):
        self.page.close()


def artifact(tmp_path: Path, name: str) -> Path:
    return Path(os.environ.get("CRYPTOBEAM_TEST_ARTIFACTS") or tmp_path) / name


def opened(browser, out: Path, tmp_path: Path, name: str) -> Page:
    page = Page(browser, out, artifact(tmp_path, name))
    assert page.problems == [] and page.requests == []
    return page


@pytest.fixture(scope="module")
def filled_report(filled_out) -> str:
    return report(filled_out)


def test_the_page_opens_offline_with_every_chart_drawn(browser, filled_out, filled_report, tmp_path):
    line = filled_report
    assert "2 chart(s): 1 symbol, dead letters, " in line
    page_text = (filled_out / "report.html").read_text()
    assert "<script src" not in page_text and page_text.count("Plotly.newPlot") == 2
    assert page_text.count("plotly.js v") == 1  # the library once, not once per chart
    page = opened(browser, filled_out, tmp_path, "report-filled.png")
    charts = page.charts()
    assert set(charts) == {"chart-bars-0", "chart-dead-letters"} and all(charts.values())
    assert artifact(tmp_path, "report-filled.png").stat().st_size > 10_000
    page.close()


def test_the_accounting_table_shows_the_summary(browser, filled_out, filled_report, tmp_path):
    summary = json.loads((filled_out / "_SUMMARY.json").read_text())
    assert summary["duplicates"] > 0 and summary["dead_letter_rows_written"] == 2  # the fixture has both
    page = opened(browser, filled_out, tmp_path, "report-accounting.png")
    shown = page.page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#accounting tr')].map(
        r => [r.dataset.key, r.querySelector('td').textContent]))""")
    flat = {
        **{k: v for k, v in summary.items() if not isinstance(v, dict)},
        **{f"dead_letters_by_reason.{k}": v for k, v in summary["dead_letters_by_reason"].items()},
    }
    assert {"records_in", "trades_in_final_bars", "dead_letter_rows_written", "duplicates"} <= shown.keys()
    assert {key: int(text.replace(",", "")) for key, text in shown.items()} == {key: flat[key] for key in shown}
    verdict = page.page.inner_text("#reconciled")
    assert verdict.startswith("Reconciles: records read") and f"{summary['records_in']:,} = " in verdict
    page.close()


def test_downsampled_candles_equal_an_independent_aggregation(browser, filled_out, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(filled_out, out)  # its own page: the module's report stays as the other tests read it
    report(out, "--max-points", "200")  # two days of minutes: 2,880 bars, shown at 15m
    page = opened(browser, out, tmp_path, "report-downsampled.png")
    assert "shown at 15m; 1m bars downsampled" in page.title("chart-bars-0")
    traces = page.traces("chart-bars-0")
    candles = {}
    for trace in (t for t in traces if t["type"] == "candlestick"):
        for x, o, h, lo, c in zip(trace["x"], trace["open"], trace["high"], trace["low"], trace["close"]):
            candles[x] = (o, h, lo, c)
    trades = dict(zip(*next((t["x"], t["y"]) for t in traces if t["name"] == "trades")))
    marked = set(next(t["x"] for t in traces if t["name"] == "holds filled bar(s)"))
    quarter_hour = "to_timestamp((epoch_us(window_start) // 900000000) * 900)"
    expected = duckdb.sql(f"""
        SELECT strftime({quarter_hour} AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S') AS x,
               arg_min(open, window_start), max(high), min(low), arg_max(close, window_start),
               sum(trade_count), bool_or(is_filled)
        FROM read_parquet('{out}/bars/**/*.parquet') WHERE is_final GROUP BY 1 ORDER BY 1""").fetchall()
    assert len(expected) == 192
    assert {_plotly_time(x): v for x, v in candles.items()} == {x: (o, h, lo, c) for x, o, h, lo, c, _, _ in expected}
    assert {_plotly_time(x): n for x, n in trades.items()} == {x: n for x, *_, n, _ in expected}
    assert {_plotly_time(x) for x in marked} == {x for x, *_, filled in expected if filled}
    page.close()


def test_gaps_are_marked_and_never_drawn(browser, gappy_out, tmp_path):
    report(gappy_out)
    page = opened(browser, gappy_out, tmp_path, "report-gaps.png")
    assert "downsampled" not in page.title("chart-bars-0")
    traces = page.traces("chart-bars-0")
    drawn = {_plotly_time(x) for t in traces if t["type"] == "candlestick" for x in t["x"]}
    gaps = {_plotly_time(x) for t in traces if t["name"] == "gap (missing windows)" for x in t["x"]}
    bar_files = f"{gappy_out}/bars/**/*.parquet"
    minutes = duckdb.sql(f"""
        SELECT strftime(window_start AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S') FROM read_parquet('{bar_files}')
        WHERE is_final""").fetchall()
    present = {m for (m,) in minutes}
    first, last = (datetime.fromisoformat(m) for m in (min(present), max(present)))
    every = {
        (first + timedelta(minutes=k)).strftime("%Y-%m-%d %H:%M:%S")
        for k in range(int((last - first) / timedelta(minutes=1)) + 1)
    }
    assert drawn == present and gaps == every - present and len(gaps) > 100
    page.close()


def test_consolidated_output_gets_deviation_and_exclusion_charts(browser, consolidated_out, tmp_path):
    line = report(consolidated_out)
    summary = json.loads((consolidated_out / "_SUMMARY.json").read_text())
    late = sum(
        pq.read_table(consolidated_out / table, columns=["pane_timing"])["pane_timing"].to_pylist().count("LATE")
        for table in ("bars", "bars_consolidated")
    )
    page = opened(browser, consolidated_out, tmp_path, "report-consolidated.png")
    charts = page.charts()
    assert set(charts) == {
        "chart-bars-0",
        "chart-bars-1",
        "chart-bars-2",
        "chart-consolidated-0",
        *(["chart-late"] if late else []),
    } and all(charts.values())
    assert f"{len(charts)} chart(s)" in line
    traces = page.traces("chart-consolidated-0")
    assert {t["name"] for t in traces if t["type"] == "scatter"} == {
        "binance:BTCUSDT",
        "coinbase:BTC-USD",
        "kraken:XBTUSD",
    }
    excluded = {t["name"]: sum(t["y"]) for t in traces if t["name"].startswith("excluded: ")}
    assert excluded == {f"excluded: {key.replace('|', ' · ')}": n for key, n in summary["venue_exclusions"].items()}
    assert excluded == {"excluded: kraken:XBTUSD · deviation": summary["venue_exclusions"]["kraken:XBTUSD|deviation"]}
    deviations = pl.read_parquet(consolidated_out / "quality", hive_partitioning=True).filter(pl.col("is_final"))
    kraken = next(t for t in traces if t["name"] == "kraken:XBTUSD")
    assert max(v for v in kraken["y"] if v is not None and math.isfinite(v)) == pytest.approx(
        deviations.filter(pl.col("exchange") == "kraken")["deviation_bps"].max()
    )
    page.close()


def test_late_panes_and_too_late_records_are_charted(browser, filled_out, tmp_path):
    """A stream's output has LATE panes (a later run's file, newest wins) and too-late dead
    letters: written here beside a backfill's files, in their schemas."""
    out = tmp_path / "out"
    shutil.copytree(filled_out, out)
    bar_file = next((out / "bars").rglob("part-all.parquet"))
    bars = pq.read_table(bar_file)
    rows = [
        dict(row, pane_timing="LATE", pane_index=1, close=row["close"] * 2, high=max(row["high"], row["close"] * 2))
        for row in bars.slice(100, 3).to_pylist()
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=bars.schema), bar_file.with_name("part-run2-late.parquet"))
    dead_file = next((out / "dead_letter").rglob("*.parquet"))
    dead = pq.read_table(dead_file)
    moment = rows[0]["window_start"]
    too_late = [
        dict(dead.to_pylist()[0], reason="too_late", stage="lateness", event_time=moment + timedelta(seconds=k))
        for k in range(4)
    ]
    (out / "dead_letter" / "reason=too_late").mkdir()
    pq.write_table(
        pa.Table.from_pylist(too_late, schema=dead.schema),
        out / "dead_letter" / "reason=too_late" / "part-run2.parquet",
    )
    report(out)
    page = opened(browser, out, tmp_path, "report-late.png")
    assert "chart-late" in page.charts()
    sums = {t["name"]: sum(t["y"]) for t in page.traces("chart-late")}
    assert sums == {"late panes (bars)": 3, "too-late records (dead-lettered)": 4}
    candles = {
        _plotly_time(x): c
        for t in page.traces("chart-bars-0")
        if t["type"] == "candlestick"
        for x, c in zip(t["x"], t["close"])
    }
    assert all(candles[row["window_start"].strftime("%Y-%m-%d %H:%M:%S")] == row["close"] for row in rows)
    page.close()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: d, "is empty"),
        (lambda d: (d / "notes.txt").write_text("hello") and d, "is not a cryptobeam output"),
        (lambda d: (d / "file").write_text("x") and d / "file", "is not a directory"),
        (lambda d: (d / "_SUMMARY.json").write_text("{cut") and d, "_SUMMARY.json cannot be read"),
    ],
)
def test_a_directory_that_is_not_an_output_is_one_line_and_exit_2(tmp_path, make, message):
    target = make(tmp_path)
    result = cryptobeam("report", str(target))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("cryptobeam: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "report.html").exists()


def test_reading_stays_beam_free_and_knows_the_sinks_partition_key():
    from io_connectors.bar_reader import PARTITION_METADATA_KEY
    from io_connectors.parquet_sink import PARTITION_METADATA_KEY as written

    assert PARTITION_METADATA_KEY == written
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, beam_pipelines.report_command, beam_pipelines.report, io_connectors.bar_reader; "
            "print(sorted(m for m in sys.modules if m.startswith('apache_beam'))[:3])",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stderr


def _decoded(value):
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).tolist()
    return value


def _plotly_time(x: str) -> str:
    return x.replace("T", " ")[:19]


# --- downsampling against a plain-Python reference ----------------------------------------------


def reference_downsample(bars: list[dict], interval: int, step: int) -> list[dict]:
    """Bucket by bucket, the plain way: every bucket from the first bar's to the last bar's."""
    by_window = {bar["window_us"]: bar for bar in bars}
    first, last = min(by_window), max(by_window)
    buckets = []
    start = first // step * step
    while start <= last:
        inside = [by_window[w] for w in sorted(by_window) if start <= w < start + step]
        windows = [w for w in range(first, last + interval, interval) if start <= w < start + step]
        buckets.append(
            {
                "bucket_us": start,
                "bars": len(inside),
                "filled": sum(b["is_filled"] for b in inside),
                "missing": len([w for w in windows if w not in by_window]),
                "open": inside[0]["open"] if inside else None,
                "high": max((b["high"] for b in inside), default=None),
                "low": min((b["low"] for b in inside), default=None),
                "close": inside[-1]["close"] if inside else None,
                "volume": sum(b["volume"] for b in inside) if inside else None,
                "trade_count": sum(b["trade_count"] for b in inside) if inside else None,
                "duplicate_count": sum(b["duplicate_count"] for b in inside) if inside else None,
            }
        )
        start += step
    return buckets


bar_strategy = st.fixed_dictionaries(
    {
        "open": st.floats(1, 100),
        "high": st.floats(1, 100),
        "low": st.floats(1, 100),
        "close": st.floats(1, 100),
        "volume": st.integers(0, 1000).map(float),
        "trade_count": st.integers(0, 50),
        "duplicate_count": st.integers(0, 5),
        "is_filled": st.booleans(),
    }
)


@settings(max_examples=150)
@given(
    windows=st.lists(
        st.tuples(st.integers(0, 400), bar_strategy), min_size=1, max_size=80, unique_by=lambda pair: pair[0]
    ),
    interval_minutes=st.sampled_from([1, 5]),
    buckets_of=st.integers(1, 12),
    origin=st.integers(0, 10_000),
)
def test_downsampling_equals_a_plain_python_reference(windows, interval_minutes, buckets_of, origin):
    interval = interval_minutes * MINUTE
    step = interval * buckets_of
    bars = [{"window_us": (origin + k) * interval, **bar} for k, bar in windows]
    ours = downsample(pl.DataFrame(bars).sample(fraction=1.0, shuffle=True, seed=1), interval, step).to_dicts()
    assert ours == reference_downsample(bars, interval, step)
