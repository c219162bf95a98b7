"""Large inputs are cut into chunks of bounded size (memory stays flat): the cut never changes a
bar, a dead letter or a count."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.chunk_planning import Chunk, _piece_rows, split_large_chunks
from io_connectors.files import InputFile
from tests.support.backfills import write_days
from tests.support.commands import run_backfill
from tests.support.helpers import trades_to_parquet
from tests.support.outputs import bars_of, summary
from transforms.interval import parse_interval

START_US = 1_704_067_200_000_000  # 2024-01-01
MINUTE_US = 60_000_000


def write_messy_parquet(path: Path, n: int = 6000, seed: int = 3) -> None:
    """Two symbols over three hours in small row groups, time-sorted per symbol, with a
    duplicate whose copies sit in different row groups, a conflicting copy, rows with no event
    time and a row with a bad price."""
    rng = np.random.default_rng(seed)
    rows = []
    for symbol in ("BTCUSDT", "ETHUSDT"):
        times = np.sort(rng.integers(START_US, START_US + 180 * MINUTE_US, n // 2))
        for i, t in enumerate(times.tolist()):
            rows.append(
                {
                    "exchange": "binance",
                    "symbol": symbol,
                    "trade_id": str(i + 1),
                    "price": 100 + i * 0.01,
                    "amount": 0.5 + (i % 7) / 10,
                    "side": "buy" if i % 3 else "sell",
                    "event_time": t,
                }
            )
    rows.append(dict(rows[10]))  # an exact copy, in the last row group
    rows.append({**rows[20], "price": rows[20]["price"] + 1})  # same id, different price
    rows.append({**rows[30], "trade_id": "no-time", "event_time": None})
    rows.append({**rows[40], "trade_id": "no-time-2", "event_time": None})
    rows.append({**rows[50], "trade_id": "bad-price", "price": -1.0})
    trades_to_parquet(rows, path, row_group_size=500)


def run(inputs: str, source: str, out: Path, *extra) -> subprocess.CompletedProcess:
    return run_backfill(source, inputs, out, "--interval", "1m", "--fill-gaps", *extra)


def dead_letters(out: Path) -> list[tuple]:
    rows = pq.read_table(out / "dead_letter").to_pylist()
    return sorted((r["reason"], r["source_offset"], r["payload_string"], r["error_message"]) for r in rows)


@pytest.fixture(scope="module")
def messy_parquet(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("messy") / "trades.parquet"
    write_messy_parquet(path)
    return path


@pytest.fixture(scope="module")
def sliced_run(messy_parquet, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The messy file's backfill in slices of 6000 rows: its output, and the command's result."""
    out = tmp_path_factory.mktemp("sliced") / "out"
    result = run(str(messy_parquet), "parquet", out, "--chunk-rows", "6000")
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


def test_time_slices_of_a_parquet_file_give_the_unsliced_result(messy_parquet, sliced_run, tmp_path):
    path = messy_parquet
    whole, (sliced, result) = tmp_path / "whole", sliced_run
    assert run(str(path), "parquet", whole, "--chunk-rows", "0").returncode == 0
    assert summary(sliced)["chunks"] >= 4, result.stdout
    assert bars_of(sliced) == bars_of(whole)
    assert dead_letters(sliced) == dead_letters(whole)
    reasons = [d[0] for d in dead_letters(sliced)]
    assert reasons.count("missing_field") + reasons.count("missing_event_time") == 2
    assert "conflicting_duplicate" in reasons and "bad_price" in reasons
    for name in ("records_in", "duplicates", "dead_letters", "dead_letters_by_reason", "trades_in_final_bars"):
        assert summary(sliced)[name] == summary(whole)[name], name
    assert summary(sliced)["reconciled"] and summary(sliced)["duplicates"] == 1
    assert summary(sliced)["records_in"] == pq.ParquetFile(path).metadata.num_rows


def test_slices_are_cut_at_window_starts_and_cover_every_row(messy_parquet):
    path = messy_parquet
    interval = parse_interval("15m")
    [whole] = [Chunk("all", (InputFile(str(path), path.stat().st_size),))]
    pieces = split_large_chunks([whole], "parquet", interval, 1000)
    assert len(pieces) > 1 and len({p.chunk_id for p in pieces}) == len(pieces)
    assert pieces[0].time_slice.start_us is None and pieces[-1].time_slice.end_us is None
    for before, after in zip(pieces, pieces[1:]):
        assert before.time_slice.end_us == after.time_slice.start_us
        assert interval.window_start_micros(after.time_slice.start_us) == after.time_slice.start_us
    assert split_large_chunks([whole], "parquet", interval, 10_000) == [whole]


def test_a_rerun_cut_differently_needs_overwrite(messy_parquet, sliced_run, tmp_path):
    path, out = messy_parquet, tmp_path / "out"
    shutil.copytree(sliced_run[0], out)  # a copy: the module's run stays as it was written
    again = run(str(path), "parquet", out, "--chunk-rows", "20000")
    assert again.returncode == 2 and "cut differently" in again.stdout + again.stderr
    assert "Traceback" not in again.stderr
    assert run(str(path), "parquet", out, "--chunk-rows", "20000", "--overwrite").returncode == 0
    assert summary(out)["reconciled"]


@pytest.mark.pipeline
def test_dated_text_files_are_grouped_into_runs_of_days(tmp_path):
    write_days(tmp_path / "days", 4, per_day=2000)
    inputs = str(tmp_path / "days" / "*.zip")
    whole, runs = tmp_path / "whole", tmp_path / "runs"
    run(inputs, "binance-aggtrades", whole, "--chunk-rows", "0")
    run(inputs, "binance-aggtrades", runs, "--chunk-rows", "5500")
    assert summary(whole)["chunks"] == 1 and summary(runs)["chunks"] == 2
    assert [b for b in bars_of(runs)] == bars_of(whole)
    assert summary(runs)["reconciled"] and summary(runs)["records_in"] == 8000
    manifests = sorted((runs / "_manifests").glob("*.json"))
    assert [len(json.loads(m.read_text())["inputs"]) for m in manifests] == [2, 2]


def test_runs_of_days_are_equal_so_parallel_workers_finish_together():
    # 30 days of two symbols, 50,000 rows a file: 3M rows over a 1M budget make 4 runs (an even
    # count), 7 or 8 days each; filling runs greedily gave 7, 7, 7, 7 and 2 days.
    files = tuple(
        InputFile(f"/d/{symbol}-aggTrades-2024-01-{day:02d}.csv", 50_000 * 50)
        for day in range(1, 31)
        for symbol in ("BTCUSDT", "ETHUSDT")
    )
    runs = split_large_chunks([Chunk("all", files)], "text", parse_interval("1m"), 1_000_000)
    days = [sorted({f.path[-6:-4] for f in run.files}) for run in runs]
    assert [len(d) for d in days] in ([7, 8, 7, 8], [8, 7, 8, 7])
    assert [day for run in days for day in run] == [f"{d:02d}" for d in range(1, 31)]
    assert all(len(run.files) == 2 * len(d) for run, d in zip(runs, days))  # a day's files stay together
    assert [run.chunk_id for run in runs] == [f"all@202401{d[0]}" for d in days]


@pytest.mark.parametrize(
    "total, budget, pieces",
    [
        (1_500_000, 6_000_000, 1),  # small: one chunk, no second worker to start
        (2_000_000, 6_000_000, 2),  # large enough to share between two workers
        (10_172_800, 6_000_000, 2),  # 10M trades of 3 symbols over a day, with window costs
        (13_000_000, 6_000_000, 4),  # over two budgets: rounded up to an even count
        (30_000_000, 5_000_000, 6),
    ],
)
def test_large_chunks_are_cut_into_an_even_number_of_pieces(total, budget, pieces):
    rows = _piece_rows(total, budget)
    assert rows <= budget and -(-total // rows) == pieces


HOUR_US = 60 * MINUTE_US


def write_parquet_with_a_lying_statistic(path: Path, hours: int = 48, rows: int = 6000, lie_us: int = 12 * HOUR_US):
    """Trades in time order over ``hours`` hours in two row groups, the second group's minimum-time
    statistic ``lie_us`` later than its rows (pyarrow writes true statistics: the footer is patched)."""
    rng = np.random.default_rng(11)
    times = np.sort(rng.integers(START_US, START_US + hours * HOUR_US, rows))
    pq.write_table(
        pa.table(
            {
                "exchange": ["binance"] * rows,
                "symbol": ["BTCUSDT"] * rows,
                "trade_id": [str(i) for i in range(rows)],
                "price": 100 + np.arange(rows) % 50 / 10,
                "amount": np.full(rows, 0.5),
                "side": ["buy", "sell"] * (rows // 2),
                "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
            }
        ),
        path,
        row_group_size=rows // 2,
    )
    data = path.read_bytes()
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    true_min = int(times[rows // 2]).to_bytes(8, "little", signed=True)
    lie = (int(times[rows // 2]) + lie_us).to_bytes(8, "little", signed=True)
    footer = data[footer_start:-8]
    assert footer.count(true_min) in (1, 2)  # the minimum, and its deprecated copy
    path.write_bytes(data[:footer_start] + footer.replace(true_min, lie) + data[-8:])
    stats = pq.ParquetFile(path).metadata.row_group(1).column(6).statistics
    assert int(pa.scalar(stats.min).cast(pa.int64()).as_py()) == int(times[rows // 2]) + lie_us


@pytest.mark.pipeline
def test_slices_read_every_row_when_a_row_groups_statistics_lie(tmp_path):
    # The slice holding the second group's first hours would skip the group by its statistics.
    path = tmp_path / "trades.parquet"
    write_parquet_with_a_lying_statistic(path)
    whole, sliced = tmp_path / "whole", tmp_path / "sliced"
    assert run(str(path), "parquet", whole, "--interval", "1h", "--chunk-rows", "0").returncode == 0
    result = run(str(path), "parquet", sliced, "--interval", "1h", "--chunk-rows", "4500")
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(sliced)["chunks"] == 3, result.stdout
    assert summary(sliced)["records_in"] == pq.ParquetFile(path).metadata.num_rows == summary(whole)["records_in"]
    assert summary(sliced)["reconciled"] and summary(sliced)["dead_letters"] == 0
    assert bars_of(sliced) == bars_of(whole)


def test_slices_trust_statistics_only_where_the_planner_found_them_right(messy_parquet, tmp_path):
    lying, messy = tmp_path / "lying.parquet", messy_parquet
    write_parquet_with_a_lying_statistic(lying)
    for path, right in ((lying, False), (messy, True)):
        pieces = split_large_chunks(
            [Chunk("all", (InputFile(str(path), path.stat().st_size),))], "parquet", parse_interval("1h"), 4500
        )
        assert len(pieces) > 1 and {p.time_slice.statistics_checked for p in pieces} == {right}
