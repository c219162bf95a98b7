"""Streaming benchmark: live-like trades -> the real local Kafka -> ``cryptobeam stream`` on Prism.

    .venv/bin/python benchmarks/stream.py [--rates 1000,5000,20000] [--seconds 30] [--early 1s]

For each rate, trades with event time = publish time (3 symbols) are published for ``--seconds``;
the stream writes its bars to a Kafka topic that this script consumes as they arrive.

- **event -> EARLY pane:** for every trade, the time from its publication until the first pane
  that counts it arrives in the bars topic (a pane of n trades counts the window's first n).
- **window end -> ON_TIME pane:** how long after its window ends the on-time pane arrives (this
  includes the watermark delay, 1 s here).
- **sustained:** every published trade is in a final bar and, in the last quarter of the run,
  trades still reach an EARLY pane within 5 s (no growing backlog). ``--find-max`` raises the
  rate until a rate is not sustained: the highest sustained rate is the stream's capacity here.
- **kept up:** sustained, and the event -> EARLY p99 within twice the early-firing period (the
  issue-6 latency target), over the whole run and over the trades sent after a 15 s warm-up
  (the stream's first seconds pay one-off costs; a stream runs for days).
- **published** counts what the broker acknowledged; messages it did not take are reported apart.
- A round whose trades do not all reach final bars also prints what the stream itself read, its
  exit and run time, and when the broker took the first trade; the JSON keeps its log's tail.
- **read all:** the stream read every published trade. A round where it read fewer is a failure
  whatever its latencies, and the script exits 1 after writing its results.

Prints a table and writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from io_connectors.avro_wire import SchemaStore, decode, encode  # noqa: E402
from io_connectors.kafka_producer import PRODUCER_SETTINGS, produce  # noqa: E402
from runners.local_kafka import LocalKafka, create_topics  # noqa: E402
from transforms.event_time import datetime_to_micros  # noqa: E402
from transforms.interval import parse_interval  # noqa: E402

CLI = str(Path(sys.executable).parent / "cryptobeam")
# Sustained: every trade reaches a final bar, the publisher held the rate, and in the last quarter
# of the run trades still reach an EARLY pane within this lag (a stream that falls behind
# accumulates backlog, and its lag grows with the run).
SUSTAINED_LAG_S = 5.0
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
WATERMARK_DELAY_S = 1.0
# The first seconds of a stream pay one-off costs (first bundles, first fetches, a broker warming
# up); a stream runs for days, so latency is also reported for trades sent after this long.
WARMUP_S = 15.0
STOP_WHEN_IDLE_S = 15.0
"""The stream stops once the topic has been read and silent this long after the last trade."""


class BarsCollector(threading.Thread):
    """Consumes the bars topic, noting when each pane arrives."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        self.panes: list[tuple[float, dict]] = []
        self.errors: list[str] = []
        self._stop_event = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )
        self._consumer.subscribe([topic])
        self._store = SchemaStore.shipped()

    def run(self):
        try:
            while not self._stop_event.is_set():
                for message in self._consumer.consume(1000, 0.05):
                    if message.error() is None:
                        bar = decode(message.value(), "bar", self._store)
                        bar["window_start"] = datetime_to_micros(bar["window_start"])
                        self.panes.append((time.time(), bar))
                    else:
                        self.errors.append(str(message.error()))
        except Exception as error:  # noqa: BLE001 - reported with the results, not lost with the thread
            self.errors.append(f"collector stopped: {type(error).__name__}: {error}")
        finally:
            self._consumer.close()

    def stop(self):
        self._stop_event.set()
        self.join(10)


def _encoded(i: int, start: float, rate: int, price: float) -> tuple[str, int, bytes]:
    symbol = SYMBOLS[i % len(SYMBOLS)]
    event_us = int((start + i / rate) * 1_000_000)
    record = {
        "exchange": "bench",
        "symbol": symbol,
        "base": None,
        "quote": None,
        "trade_id": str(i),
        "price": price,
        "amount": 1.0,
        "side": "buy",
        "event_time": event_us,
        "receive_time": None,
    }
    return symbol, event_us, encode(record, "trade")


def prepare(rate: int, seconds: float, lead_s: float) -> tuple[float, list]:
    """Messages encoded ahead, so the publisher itself does not limit the rate; their event times
    start ``lead_s`` after encoding ends."""
    total = int(rate * seconds)
    prices = 100 + np.random.default_rng(0).random(total)
    _encoded(0, 0.0, rate, 1.0)  # warm up the encoder
    probe = time.perf_counter()
    for i in range(2000):
        _encoded(i, 0.0, rate, 1.0)
    start = time.time() + lead_s + (time.perf_counter() - probe) * total / 2000 * 1.2
    return start, [_encoded(i, start, rate, float(prices[i])) for i in range(total)]


def warmed_producer(bootstrap: str, warmup_topic: str, timeout_s: float = 60) -> tuple[Producer, float]:
    """A producer whose first delivery is done, and how long it took. On a fresh broker the first
    delivery can be acknowledged far later than the schedule allows for, and a stream started
    meanwhile would stop idle before any trade came; warming up before the stream's launch keeps
    that out of the measured round."""
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})
    delivered: list = []
    began = time.monotonic()
    produce(
        producer,
        warmup_topic,
        b"warm-up",
        None,
        int(time.time() * 1000),
        lambda error, _message: delivered.append(error),
    )
    producer.flush(timeout_s)
    if delivered != [None]:
        raise RuntimeError(f"the broker did not take a warm-up message within {timeout_s:.0f} s: {delivered}")
    return producer, time.monotonic() - began


def publish(
    producer: Producer, topic: str, rate: int, start: float, messages: list
) -> tuple[dict, float, int, float | None]:
    """Sends each message at its event time. Returns per-symbol lists of (event time µs, send wall
    time s) in send order, the rate achieved, how many messages the broker did not take, and when
    (wall time) the broker acknowledged the first one."""
    failed = {"n": 0}
    first_ack: list[float] = []

    def on_delivery(error, _message):
        if error is not None:
            failed["n"] += 1
        elif not first_ack:
            first_ack.append(time.time())

    total = len(messages)
    sent: dict[str, list[tuple[int, float]]] = defaultdict(list)
    step = max(1, rate // 100)  # publish in 10 ms slices
    for first in range(0, total, step):
        wait = start + first / rate - time.time()
        if wait > 0:
            time.sleep(wait)
        now = time.time()
        for symbol, event_us, value in messages[first : first + step]:
            produce(producer, topic, value, f"bench:{symbol}", event_us // 1000, on_delivery)
            sent[symbol].append((event_us, max(now, event_us / 1e6)))
    achieved = total / max(time.time() - start, 1e-9)
    failed["n"] += producer.flush(60)  # still undelivered after a minute
    return sent, achieved, failed["n"], (first_ack[0] if first_ack else None)


def latencies(panes: list[tuple[float, dict]], sent: dict, interval_us: int) -> dict:
    by_window: dict[tuple, list[tuple[float, dict]]] = defaultdict(list)
    for arrived, bar in panes:
        by_window[(bar["symbol"], bar["window_start"])].append((arrived, bar))
    first_pane, on_time, final_trades = [], [], 0
    tail_pane = []  # event -> EARLY for the last quarter of the run: grows without bound when the stream falls behind
    steady_pane = []  # event -> EARLY for trades sent after the warm-up
    first_send = min(trades[0][1] for trades in sent.values())
    last_send = max(trades[-1][1] for trades in sent.values())
    steady_from = first_send + WARMUP_S
    tail_from = first_send + 0.75 * (last_send - first_send)
    # The watermark follows the newest event time less the delay: windows ending after that
    # close only when the stream drains, however long after its end that is.
    last_watermark_us = max(trades[-1][0] for trades in sent.values()) - int(WATERMARK_DELAY_S * 1e6)
    for symbol, trades in sent.items():
        events = np.array([e for e, _ in trades])
        sends = np.array([s for _, s in trades])
        starts = events // interval_us * interval_us
        for window_start in np.unique(starts).tolist():
            in_window = sends[starts == window_start]
            key = (symbol, window_start)
            counted = 0
            for arrived, bar in sorted(by_window.get(key, []), key=lambda p: p[1]["pane_index"]):
                window_end_s = (window_start + interval_us) / 1e6
                if bar["pane_timing"] == "ON_TIME" and window_start + interval_us <= last_watermark_us:
                    on_time.append(arrived - window_end_s)  # windows only the drain closes do not count
                if bar["trade_count"] > counted:
                    if bar["pane_timing"] == "EARLY":
                        sends_counted = in_window[counted : bar["trade_count"]]
                        first_pane += (arrived - sends_counted).tolist()
                        tail_pane += (arrived - sends_counted[sends_counted >= tail_from]).tolist()
                        steady_pane += (arrived - sends_counted[sends_counted >= steady_from]).tolist()
                    counted = bar["trade_count"]
                if bar["is_final"]:
                    final_trades += bar["trade_count"]

    def pct(values, q):
        return round(float(np.percentile(values, q)), 3) if values else None

    return {
        "early_p50_s": pct(first_pane, 50),
        "early_p99_s": pct(first_pane, 99),
        "early_samples": len(first_pane),
        "tail_early_p99_s": pct(tail_pane, 99),
        "steady_early_p50_s": pct(steady_pane, 50),
        "steady_early_p99_s": pct(steady_pane, 99),
        "on_time_p50_s": pct(on_time, 50),
        "on_time_p99_s": pct(on_time, 99),
        "final_trades": final_trades,
    }


def run_rate(bootstrap: str, rate: int, seconds: float, early_s: float, interval: str, work: Path) -> dict:
    tag = uuid.uuid4().hex[:6]
    trades_topic, bars_topic, warmup_topic = f"bench_trades_{tag}", f"bench_bars_{tag}", f"bench_warmup_{tag}"
    create_topics(bootstrap, {trades_topic: 3, bars_topic: 1, warmup_topic: 1})
    producer, warmup_s = warmed_producer(bootstrap, warmup_topic)
    collector = BarsCollector(bootstrap, bars_topic)
    collector.start()
    start, messages = prepare(rate, seconds, lead_s=10)
    out = work / f"out-{rate}"
    log = open(work / f"stream-{rate}.log", "w")
    launched = time.time()
    # Silence before the first trade is not the end of the topic: the stream waits out the lead too.
    stop_when_idle_s = STOP_WHEN_IDLE_S + max(0.0, start - launched)
    stream = subprocess.Popen(
        [
            CLI,
            "stream",
            "--kafka",
            bootstrap,
            "--topic",
            trades_topic,
            "--group",
            tag,
            "--bars-topic",
            bars_topic,
            "--out",
            str(out),
            "--interval",
            interval,
            "--early",
            f"{early_s:g}s",
            "--allowed-lateness",
            "1m",
            "--watermark-delay",
            f"{WATERMARK_DELAY_S:g}s",
            "--idle-after",
            "2s",
            "--stop-when-idle",
            f"{stop_when_idle_s:.0f}s",
            "--no-progress",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # Prism and its workers start meanwhile
    sent, achieved, undelivered, first_ack = publish(producer, trades_topic, rate, start, messages)
    published_s = time.time() - start
    returncode = stream.wait(timeout=600)
    collector.stop()
    log.close()
    summary_path = out / "_SUMMARY.json"
    stream_summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    result = {
        "rate": rate,
        "seconds": seconds,
        "published": sum(len(v) for v in sent.values()) - undelivered,
        "undelivered": undelivered,
        "achieved_rate": round(achieved),
        "publish_seconds": round(published_s, 1),
        "stream_exit": returncode,
        "panes_collected": len(collector.panes),
        "collector_errors": sorted(set(collector.errors))[:5],
        # Where a round went wrong: what the stream itself counted, how long after its launch
        # the broker took the first trade, and how long the stream ran.
        "stream_records_in": stream_summary.get("records_in"),
        "stream_elapsed_s": stream_summary.get("elapsed_seconds"),
        "first_trade_acked_after_launch_s": None if first_ack is None else round(first_ack - launched, 2),
        "producer_warmup_s": round(warmup_s, 2),
        **latencies(collector.panes, sent, parse_interval(interval).micros),
    }
    result["read_all"] = result["stream_records_in"] == result["published"]
    result["sustained"] = (
        returncode == 0
        and result["read_all"]
        and result["final_trades"] == result["published"]
        and result["achieved_rate"] >= 0.95 * rate
        and result["tail_early_p99_s"] is not None
        and result["tail_early_p99_s"] <= SUSTAINED_LAG_S
    )
    result["kept_up"] = result["sustained"] and result["early_p99_s"] <= 2 * early_s
    result["kept_up_after_warmup"] = (
        result["sustained"] and result["steady_early_p99_s"] is not None and result["steady_early_p99_s"] <= 2 * early_s
    )  # None: a run shorter than the warm-up
    if result["final_trades"] != result["published"] or not result["read_all"]:
        result["stream_log_tail"] = (work / f"stream-{rate}.log").read_text(errors="replace").splitlines()[-40:]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="1000,5000,20000")
    parser.add_argument(
        "--find-max",
        default="",
        help="more rates to try in order after --rates, stopping at the "
        "first that is not sustained (e.g. 30000,40000,60000)",
    )
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--early", type=float, default=1.0, help="early firing period, seconds")
    parser.add_argument(
        "--interval", default="10s", help="bar interval (default 10s, so a run sees many windows close)"
    )
    parser.add_argument("--keep", help="keep the broker's and streams' logs and outputs in this directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cryptobeam-stream-bench-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        broker = LocalKafka.start(work / "kafka")
        try:
            results = [
                run_rate(broker.bootstrap, int(rate), args.seconds, args.early, args.interval, work)
                for rate in args.rates.split(",")
            ]
            for rate in [r for r in args.find_max.split(",") if r]:
                results.append(run_rate(broker.bootstrap, int(rate), args.seconds, args.early, args.interval, work))
                if not results[-1]["sustained"]:
                    break
        finally:
            broker.stop()
    table = Table(title=f"cryptobeam stream on Prism, {args.interval} bars, early {args.early:g}s, {date.today()}")
    for column in (
        "trades/s asked",
        "achieved",
        "published",
        "in final bars",
        "event→EARLY p50 / p99 s",
        f"after {WARMUP_S:g} s: p50 / p99 s",
        "last-quarter EARLY p99 s",
        "window end→ON_TIME p50 / p99 s",
        "sustained",
        "kept up (whole run / after warm-up)",
    ):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            f"{r['rate']:,}",
            f"{r['achieved_rate']:,}",
            f"{r['published']:,}",
            f"{r['final_trades']:,}",
            f"{r['early_p50_s']} / {r['early_p99_s']}",
            f"{r['steady_early_p50_s']} / {r['steady_early_p99_s']}",
            f"{r['tail_early_p99_s']}",
            f"{r['on_time_p50_s']} / {r['on_time_p99_s']}",
            "yes" if r["sustained"] else "NO",
            f"{'yes' if r['kept_up'] else 'NO'} / {'yes' if r['kept_up_after_warmup'] else 'NO'}",
        )
    Console(width=200).print(table)
    for r in results:
        if r["undelivered"]:
            print(
                f"{r['rate']:,} trades/s: {r['undelivered']:,} messages the broker did not take "
                "(not counted as published)"
            )
        if r["collector_errors"] or not r["panes_collected"]:
            print(
                f"{r['rate']:,} trades/s: {r['panes_collected']} panes collected from the bars topic; "
                f"collector errors: {r['collector_errors'] or 'none'}"
            )
        if r["final_trades"] != r["published"]:
            print(
                f"{r['rate']:,} trades/s: {r['final_trades']:,} of {r['published']:,} trades in final bars; the stream "
                f"read {r['stream_records_in']} records, exited {r['stream_exit']} after {r['stream_elapsed_s']} s; "
                f"the broker took the first trade {r['first_trade_acked_after_launch_s']} s after the stream's launch, "
                f"and the producer's warm-up message {r['producer_warmup_s']} s (its log's tail is in the JSON)"
            )
    unread = [r for r in results if not r["read_all"]]
    for r in unread:
        Console(stderr=True).print(
            f"[red]FAILED: at {r['rate']:,} trades/s the stream read {r['stream_records_in']} of "
            f"{r['published']:,} published trades (exit {r['stream_exit']})[/red]"
        )
    sustained = [r["rate"] for r in results if r["sustained"]]
    print(f"highest sustained rate tried: {max(sustained):,} trades/s" if sustained else "no rate was sustained")
    target = ROOT / "benchmarks" / "results" / "stream.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        json.dumps(
            {
                "date": str(date.today()),
                "machine": platform.platform(),
                "early_s": args.early,
                "interval": args.interval,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"written {target}")
    if unread:
        sys.exit(1)


if __name__ == "__main__":
    main()
