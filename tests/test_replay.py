"""Replay into a real local Kafka: every trade, event-time order within the disorder bound, late
trades held back, pacing by speed."""

from __future__ import annotations

import time
import zipfile

from io_connectors.avro_wire import SchemaStore, decode
from tests.support.commands import cli
from tests.support.kafka import read_topic
from tests.support.paths import BUNDLED, ROOT
from tests.support.streams import replay


def test_replay_every_trade_with_bounded_disorder_and_late_trades(kafka_bootstrap):
    result = replay(
        kafka_bootstrap,
        "replay_test",
        "--disorder",
        "2s",
        "--late-fraction",
        "0.01",
        "--late-by",
        "5m",
        "--seed",
        "3",
    )
    lines = []
    for path in sorted((ROOT / "data").glob("*.zip")):
        with zipfile.ZipFile(path) as archive:
            lines += archive.read(archive.namelist()[0]).decode().splitlines()
    messages = read_topic(kafka_bootstrap, "replay_test", len(lines))
    assert len(messages) == len(lines)
    store = SchemaStore.shipped()
    trades = [decode(m.value(), "trade", store) for m in messages]
    assert sorted(int(t["trade_id"]) for t in trades) == sorted(int(line.split(",")[0]) for line in lines)
    times_ms = [int(t["event_time"].timestamp() * 1000) for t in trades]
    assert [m.timestamp()[1] for m in messages] == times_ms  # message timestamp = event time
    running_max, behind = 0, 0
    for t in times_ms:
        if t < running_max - 2000:
            behind += 1  # only a trade held back as late can be more than the disorder bound behind
        running_max = max(running_max, t)
    late = int(
        next(line for line in result.stdout.splitlines() if "held back as late" in line).split("│")[2].replace(",", "")
    )
    assert 0 < behind <= late


def test_replay_paces_by_event_time(kafka_bootstrap, tmp_path):
    path = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    path.write_text("".join(f"{i},1.0,1.0,{i},{i},{1704067200000 + i * 1000},true,true\n" for i in range(11)))
    started = time.monotonic()
    replay(kafka_bootstrap, "paced", "--speed", "5", inputs=str(path))
    assert time.monotonic() - started >= 2.0  # 10 s of event time at 5x real time


def test_replay_rejects_bad_options(kafka_bootstrap):
    result = cli(
        "replay", "--source", "binance-aggtrades", "--input", BUNDLED, "--kafka", kafka_bootstrap, "--speed", "0"
    )
    assert result.returncode == 2 and "--speed" in result.stderr and "Traceback" not in result.stderr
