"""A live collector: one or several exchanges' public trade feeds into Kafka, in one process.

Each feed (one exchange, its symbols) keeps its own websocket session and reconnect loop, so one
exchange dropping its connection never stops the others; all of them publish through one producer
into one trades topic. Each frame becomes trades (or a dead letter). A trade already published is
dropped and counted as a duplicate. When ids are consecutive and a live id jumps, the missed range
is fetched over REST in the background and published too; what REST cannot give is counted and
logged as unfilled, never fatal. Every change of a feed's connection becomes a ``feed_status``
record per symbol (``feed_status.FeedStatus``).

``stop()`` (wired to SIGINT/SIGTERM by the CLI), ``max_seconds`` or ``max_trades`` (all feeds
together) end the run: reading stops, pending gap fills get ``drain_seconds`` to finish, every
feed's symbols are marked ``disconnected``/``stopped``, and the producer is flushed and closed
before ``run()`` returns the counters. An exchange refusing a subscription (a wrong symbol) ends
the whole run the same way, then ``run()`` raises its ``ExchangeRejected``: no retry can fix it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import httpx

from io_connectors.backoff import Backoff
from io_connectors.collectors.counters import CollectorCounters
from io_connectors.collectors.feed import ExchangeFeed
from io_connectors.collectors.feed_status import CONNECTED, RESUBSCRIBED, FeedStatus
from io_connectors.collectors.frames import ExchangeRejected, FrameError, now_micros
from io_connectors.collectors.kafka_output import KafkaOutput
from io_connectors.collectors.rest import RestClient, RestError
from io_connectors.collectors.session import keep_reading
from io_connectors.collectors.trade_ids import Gap, TradeIds
from transforms.dead_letter import dead_letter

log = logging.getLogger("cryptobeam.collect")
progress_log = logging.getLogger("cryptobeam.collect.progress")
LOGGED_MALFORMED = 20  # then only every 1000th, so a broken feed cannot flood the log


@dataclass(frozen=True)
class FeedSettings:
    """One exchange's part of a run: which symbols, on which channel, from where."""

    feed: ExchangeFeed
    symbols: tuple[str, ...]
    channel: str
    ws_url: str
    rest_url: str | None = None


@dataclass(frozen=True)
class CollectorSettings:
    """What every feed of a run shares."""

    stale_after: float | None = 30.0  # None or 0: no watchdog
    reconnect_backoff: Backoff = field(default_factory=Backoff)
    rest_backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=30.0))
    rest_attempts: int = 5
    max_seconds: float | None = None
    max_trades: int | None = None  # all feeds together
    progress_every: float | None = 10.0
    drain_seconds: float = 15.0
    flush_seconds: float = 30.0


class FeedCollector:
    """One exchange's feed: its session, duplicates and gaps, status records and counters."""

    def __init__(
        self, spec: FeedSettings, settings: CollectorSettings, output: KafkaOutput, on_published: Callable[[], None]
    ):
        self.spec, self.feed, self.name = spec, spec.feed, spec.feed.name
        self.settings, self.output, self._on_published = settings, output, on_published
        self.counters = CollectorCounters()
        self.url = self.feed.connect_url(spec.ws_url, spec.symbols, spec.channel)
        self.status = FeedStatus(self.name, spec.symbols, self._publish_status)
        self._ids = TradeIds(sequential=self.feed.sequential_ids)
        self._rest_turn = asyncio.Lock()  # one REST fill at a time per exchange: gaps must not become a request storm
        self._fills: set[asyncio.Task] = set()
        self._rest: RestClient | None = None
        # Figures the counters keep per feed, kept per symbol or reason for the metrics endpoint
        # (io_connectors.prometheus_metrics); plain dicts, which a scrape in another thread copies whole.
        self.received_by_symbol: dict[str, int] = dict.fromkeys(spec.symbols, 0)
        self.newest_trade_us: dict[str, int] = {}  # event time of each symbol's newest published trade
        self.dead_letters_by_reason: dict[str, int] = {}

    @property
    def connected(self) -> bool:
        return self.status.status in (CONNECTED, RESUBSCRIBED)

    async def read(self, http: httpx.AsyncClient) -> None:
        """Read until cancelled; a refused subscription marks the feed disconnected and ends it."""
        settings = self.settings
        self._rest = RestClient(http, settings.rest_backoff, settings.rest_attempts, self._count_rest_retry)
        try:
            await keep_reading(
                self.url,
                self.feed.subscriptions(self.spec.symbols, self.spec.channel),
                self.handle_frame,
                stale_after=settings.stale_after,
                backoff=settings.reconnect_backoff,
                counters=self.counters,
                on_connected=self.status.connected,
                on_disconnected=self.status.disconnected,
                name=self.name,
            )
        except ExchangeRejected as error:
            self.status.disconnected(f"rejected: {error}")
            raise

    def handle_frame(self, frame: str | bytes) -> None:
        """One websocket frame: publish its new trades, or dead-letter it."""
        self.counters.frames += 1
        try:
            trades = self.feed.parse_frame(frame, now_micros())
        except FrameError as error:
            self.counters.malformed += 1
            self.dead_letters_by_reason[error.reason] = self.dead_letters_by_reason.get(error.reason, 0) + 1
            if self.counters.malformed <= LOGGED_MALFORMED or self.counters.malformed % 1000 == 0:
                log.warning(
                    "%s: malformed frame #%d (%s: %s), dead-lettered: %.200r",
                    self.name,
                    self.counters.frames,
                    error.reason,
                    error,
                    frame,
                )
            self.output.dead_letter(
                dead_letter(error.reason, str(error), "collect", frame, self.url, self.counters.frames, self.name)
            )
            return
        self.counters.received += len(trades)
        for trade in trades:
            symbol = trade["symbol"]
            self.received_by_symbol[symbol] = self.received_by_symbol.get(symbol, 0) + 1
            self._accept(trade, live=True)

    def _publish_status(self, record: dict) -> None:
        self.output.feed_status(record)
        self.counters.status_records += 1

    def _accept(self, trade: dict, live: bool) -> None:
        new, gap = self._ids.observe(trade["symbol"], trade["trade_id"], live)
        if gap is not None:
            self._on_gap(gap)
        if not new:
            self.counters.duplicates += 1
            return
        self.output.trade(trade)
        self.counters.published += 1
        if trade["event_time"] > self.newest_trade_us.get(trade["symbol"], 0):
            self.newest_trade_us[trade["symbol"]] = trade["event_time"]
        self._on_published()

    def _on_gap(self, gap: Gap) -> None:
        self.counters.gaps_detected += 1
        if self.feed.fetch_range is None or not self.spec.rest_url:
            self._unfilled(gap, gap.size, "no REST source for missed trades")
            return
        log.warning(
            "%s %s: ids %d..%d (%d trades) were missed; fetching them over REST",
            self.name,
            gap.symbol,
            gap.first_id,
            gap.last_id,
            gap.size,
        )
        task = asyncio.get_running_loop().create_task(self._fill(gap))
        self._fills.add(task)
        task.add_done_callback(self._fills.discard)

    async def _fill(self, gap: Gap) -> None:
        fetched, problem = set(), None
        try:
            async with self._rest_turn:
                async for page in self.feed.fetch_range(
                    self._rest, self.spec.rest_url, gap.symbol, self.spec.channel, gap.first_id, gap.last_id
                ):
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
            self._unfilled(
                gap, gap.size - len(fetched), problem or "the exchange returned fewer trades than were missed"
            )
        else:
            log.info("%s %s: gap %d..%d filled", self.name, gap.symbol, gap.first_id, gap.last_id)

    def _unfilled(self, gap: Gap, missing: int, why: str) -> None:
        self.counters.gaps_unfilled += 1
        self.counters.trades_unfilled += missing
        log.error(
            "%s %s: gap %d..%d left with %d trade(s) missing: %s",
            self.name,
            gap.symbol,
            gap.first_id,
            gap.last_id,
            missing,
            why,
        )

    async def drain_gap_fills(self) -> None:
        if not self._fills:
            return
        log.info("%s: waiting up to %g s for %d gap fill(s)", self.name, self.settings.drain_seconds, len(self._fills))
        _, pending = await asyncio.wait(set(self._fills), timeout=self.settings.drain_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _count_rest_retry(self) -> None:
        self.counters.rest_retries += 1


class Collector:
    def __init__(self, feeds: Sequence[FeedSettings], settings: CollectorSettings, output: KafkaOutput):
        if not feeds:
            raise ValueError("a collector needs at least one feed")
        self.settings, self.output = settings, output
        self.feeds = [FeedCollector(spec, settings, output, self._count_published) for spec in feeds]
        self.stop_reason: str | None = None
        self.undelivered = 0  # the producer is shared, so what Kafka did not take is the run's, not a feed's
        self._published = 0
        self._stop = asyncio.Event()

    @property
    def counters(self) -> CollectorCounters:
        """All feeds' counters added up, with what Kafka did not take."""
        total = CollectorCounters.total([f.counters for f in self.feeds])
        total.undelivered = self.undelivered
        return total

    def stop(self, reason: str = "stopped") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            log.info("stopping: %s", reason)
            self._stop.set()

    async def run(self) -> CollectorCounters:
        """Collect until stopped; re-raises a feed's ``ExchangeRejected`` after flushing what was collected."""
        settings = self.settings
        async with httpx.AsyncClient(timeout=10.0, headers={"User-Agent": "cryptobeam-collector"}) as http:
            reading = [asyncio.create_task(f.read(http), name=f"collect {f.name}") for f in self.feeds]
            stopping = asyncio.create_task(self._stop.wait())
            tasks = [*reading, stopping]
            if settings.progress_every:
                tasks.append(asyncio.create_task(self._report_progress(settings.progress_every)))
            try:
                done, _ = await asyncio.wait(
                    {*reading, stopping}, timeout=settings.max_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    self.stop(f"{settings.max_seconds:g} s elapsed")
                self._stop_if_a_feed_ended(reading)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await asyncio.gather(*(f.drain_gap_fills() for f in self.feeds))
                for feed in self.feeds:
                    feed.status.stopped()
                self.undelivered = self.output.close(settings.flush_seconds)
        for task in reading:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()
        return self.counters

    def _stop_if_a_feed_ended(self, reading: list[asyncio.Task]) -> None:
        for feed, task in zip(self.feeds, reading):
            if task.done() and not task.cancelled() and task.exception() is not None:
                error = task.exception()
                self.stop(
                    f"{feed.name} refused the subscription"
                    if isinstance(error, ExchangeRejected)
                    else f"{feed.name} failed: {type(error).__name__}"
                )
                return

    def _count_published(self) -> None:
        self._published += 1
        if self.settings.max_trades and self._published >= self.settings.max_trades:
            self.stop(f"{self.settings.max_trades:,} trades published")

    async def _report_progress(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            for feed in self.feeds:
                progress_log.info("%s: %s", feed.name, feed.counters.progress_line())
