"""A live collector: one exchange's public trade feed into Kafka.

Each frame becomes trades (or a dead letter). A trade already published is dropped and counted as
a duplicate. When ids are consecutive and a live id jumps, the missed range is fetched over REST
in the background and published too; what REST cannot give is counted and logged as unfilled,
never fatal. ``stop()`` (wired to SIGINT/SIGTERM by the CLI), ``max_seconds`` or ``max_trades``
end the run: reading stops, pending gap fills get ``drain_seconds`` to finish, and the producer is
flushed and closed before ``run()`` returns the counters.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import httpx

from io_connectors.collectors.backoff import Backoff
from io_connectors.collectors.counters import CollectorCounters
from io_connectors.collectors.feed import ExchangeFeed
from io_connectors.collectors.frames import FrameError, now_micros
from io_connectors.collectors.kafka_output import KafkaOutput
from io_connectors.collectors.rest import RestClient, RestError
from io_connectors.collectors.session import keep_reading
from io_connectors.collectors.trade_ids import Gap, TradeIds
from transforms.dead_letter import dead_letter

log = logging.getLogger("cryptobeam.collect")
progress_log = logging.getLogger("cryptobeam.collect.progress")
LOGGED_MALFORMED = 20  # then only every 1000th, so a broken feed cannot flood the log


@dataclass(frozen=True)
class CollectorSettings:
    symbols: tuple[str, ...]
    channel: str
    ws_url: str
    rest_url: str | None = None
    stale_after: float | None = 30.0  # None or 0: no watchdog
    reconnect_backoff: Backoff = field(default_factory=Backoff)
    rest_backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=30.0))
    rest_attempts: int = 5
    max_seconds: float | None = None
    max_trades: int | None = None
    progress_every: float | None = 10.0
    drain_seconds: float = 15.0
    flush_seconds: float = 30.0


class Collector:
    def __init__(self, feed: ExchangeFeed, settings: CollectorSettings, output: KafkaOutput):
        self.feed, self.settings, self.output = feed, settings, output
        self.counters = CollectorCounters()
        self.stop_reason: str | None = None
        self.url = feed.connect_url(settings.ws_url, settings.symbols, settings.channel)
        self._ids = TradeIds(sequential=feed.sequential_ids)
        self._stop = asyncio.Event()
        self._rest_turn = asyncio.Lock()  # one REST fill at a time: gaps must not become a request storm
        self._fills: set[asyncio.Task] = set()
        self._rest: RestClient | None = None

    def stop(self, reason: str = "stopped") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            log.info("stopping: %s", reason)
            self._stop.set()

    async def run(self) -> CollectorCounters:
        """Collect until stopped; re-raises ``ExchangeRejected`` after flushing what was collected."""
        settings = self.settings
        async with httpx.AsyncClient(timeout=10.0, headers={"User-Agent": "cryptobeam-collector"}) as http:
            self._rest = RestClient(http, settings.rest_backoff, settings.rest_attempts, self._count_rest_retry)
            reading = asyncio.create_task(keep_reading(
                self.url, self.feed.subscriptions(settings.symbols, settings.channel), self.handle_frame,
                stale_after=settings.stale_after, backoff=settings.reconnect_backoff, counters=self.counters))
            stopping = asyncio.create_task(self._stop.wait())
            tasks = [reading, stopping]
            if settings.progress_every:
                tasks.append(asyncio.create_task(self._report_progress(settings.progress_every)))
            try:
                await asyncio.wait({reading, stopping}, timeout=settings.max_seconds,
                                   return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    self.stop(self.stop_reason or f"{settings.max_seconds:g} s elapsed")
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._drain_gap_fills()
                self.counters.undelivered = self.output.close(settings.flush_seconds)
        if not reading.cancelled() and reading.exception() is not None:
            raise reading.exception()
        return self.counters

    def handle_frame(self, frame: str | bytes) -> None:
        """One websocket frame: publish its new trades, or dead-letter it."""
        self.counters.frames += 1
        try:
            trades = self.feed.parse_frame(frame, now_micros())
        except FrameError as error:
            self.counters.malformed += 1
            if self.counters.malformed <= LOGGED_MALFORMED or self.counters.malformed % 1000 == 0:
                log.warning("malformed frame #%d (%s: %s), dead-lettered: %.200r", self.counters.frames,
                            error.reason, error, frame)
            self.output.dead_letter(dead_letter(error.reason, str(error), "collect", frame, self.url,
                                                self.counters.frames, self.feed.name))
            return
        self.counters.received += len(trades)
        for trade in trades:
            self._accept(trade, live=True)

    def _accept(self, trade: dict, live: bool) -> None:
        new, gap = self._ids.observe(trade["symbol"], trade["trade_id"], live)
        if gap is not None:
            self._on_gap(gap)
        if not new:
            self.counters.duplicates += 1
            return
        self.output.trade(trade)
        self.counters.published += 1
        if self.settings.max_trades and self.counters.published >= self.settings.max_trades:
            self.stop(f"{self.settings.max_trades:,} trades published")

    def _on_gap(self, gap: Gap) -> None:
        self.counters.gaps_detected += 1
        if self.feed.fetch_range is None or not self.settings.rest_url:
            self._unfilled(gap, gap.size, "no REST source for missed trades")
            return
        log.warning("%s %s: ids %d..%d (%d trades) were missed; fetching them over REST", self.feed.name,
                    gap.symbol, gap.first_id, gap.last_id, gap.size)
        task = asyncio.get_running_loop().create_task(self._fill(gap))
        self._fills.add(task)
        task.add_done_callback(self._fills.discard)

    async def _fill(self, gap: Gap) -> None:
        fetched, problem = set(), None
        try:
            async with self._rest_turn:
                async for page in self.feed.fetch_range(self._rest, self.settings.rest_url, gap.symbol,
                                                        self.settings.channel, gap.first_id, gap.last_id):
                    self.counters.gap_trades_fetched += len(page)
                    for trade in page:
                        fetched.add(trade["trade_id"])
                        self._accept(trade, live=False)
        except RestError as error:
            problem = str(error)
        except asyncio.CancelledError:
            self._unfilled(gap, gap.size - len(fetched), "the collector stopped before REST answered")
            raise
        if len(fetched) < gap.size:
            self._unfilled(gap, gap.size - len(fetched), problem or "the exchange returned fewer trades than were missed")
        else:
            log.info("%s %s: gap %d..%d filled", self.feed.name, gap.symbol, gap.first_id, gap.last_id)

    def _unfilled(self, gap: Gap, missing: int, why: str) -> None:
        self.counters.gaps_unfilled += 1
        self.counters.trades_unfilled += missing
        log.error("%s %s: gap %d..%d left with %d trade(s) missing: %s", self.feed.name, gap.symbol,
                  gap.first_id, gap.last_id, missing, why)

    async def _drain_gap_fills(self) -> None:
        if not self._fills:
            return
        log.info("waiting up to %g s for %d gap fill(s)", self.settings.drain_seconds, len(self._fills))
        _, pending = await asyncio.wait(set(self._fills), timeout=self.settings.drain_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _count_rest_retry(self) -> None:
        self.counters.rest_retries += 1

    async def _report_progress(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            progress_log.info("%s: %s", self.feed.name, self.counters.progress_line())
