"""``cryptobeam collect --chain ethereum``: a node's canonical blocks and ERC-20 transfers into Kafka.

    cryptobeam collect --chain ethereum --rpc http://127.0.0.1:8545 --kafka 127.0.0.1:9092 \\
        --checkpoint ethereum.json

A ``ChainFollower`` (``io_connectors/chain_follower.py``) polls the node every ``--poll-interval``
(at once again while it is catching up); each step's blocks go to ``--blocks-topic``
(``schemas/block.avsc``), their transfers to ``--transfers-topic`` (``schemas/token_transfer.avsc``),
logs that are no ERC-20 transfer and node answers that cannot be read to ``--dead-letter-topic``,
all in the project's Avro wire format (``io_connectors/avro_wire.py``) through the collectors'
``KafkaOutput``. A reorg publishes retractions (the same records with ``retracted=true``) of the
orphaned blocks' records before the new blocks' records; a reorg back to a block retracted before
publishes its records again with the next ``publication`` number, so they are not copies.

**Keys.** Every message of a chain is keyed by the chain's name, so each topic keeps the whole
chain on one partition in the follower's order: a retraction always follows the record it
withdraws, and a block's transfers stay in log order. Keying by block hash would keep a
retraction behind its original too, but would scatter consecutive blocks over partitions, and a
consumer netting retractions in event time would lose the chain's order. One chain produces far
less than one partition takes (a block every 12 s with a few hundred transfers).

**Delivery and checkpoints.** After each step the producer is flushed; only when Kafka has
acknowledged every message of the step is the follower's state written to ``--checkpoint``. A
restarted collector resumes from it: the next block, no gap, and nothing published twice after a
clean stop. A crash between a step's delivery and its checkpoint publishes that step again on
restart (at least once, never a gap); the records carry their identity (block hash or
``transfer_id``, ``publication`` and ``retracted``) for a consumer to drop the repeat.

**Failures.** A node that is down, refuses a request or contradicts itself is asked again after
an exponential backoff, from the same state, so when it is back the follower continues with no
gap and no duplicate. An answer it cannot read becomes a dead letter and the step is repeated
later. A reorg deeper than ``--reorg-depth`` publishes dead letters for the new branch's blocks
and ends the run with a one-line error (exit 1). While Kafka has not acknowledged a step the node
waits; a message the producer gives up on ends the run without writing the checkpoint (exit 3).

``run_chain_collect`` returns the exit code and prints a summary table. The options are
``io_connectors.chain_options``'s, which the command line imports without this module.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from io_connectors.avro_wire import encode
from io_connectors.backoff import Backoff
from io_connectors.chain_follower import (
    BLOCK,
    DEAD_LETTER,
    DEFAULT_BLOCKS_PER_STEP,
    TOKEN_TRANSFER,
    ChainCounters,
    ChainEvent,
    ChainFollower,
    CheckpointError,
    FollowerState,
    NodeInconsistent,
    ReorgTooDeep,
    UnreadableAnswer,
)
from io_connectors.chain_options import (
    DEFAULT_FINALIZED_DEPTH,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_REORG_DEPTH,
    DEFAULT_SAFE_DEPTH,
    EXCHANGE_OPTIONS,
)
from io_connectors.collectors.kafka_output import KafkaOutput, KafkaUnreachable, check_reachable
from io_connectors.ethereum_rpc import EthereumRpc, RpcError, checked_rpc_url, display_url

log = logging.getLogger("cryptobeam.collect")
progress_log = logging.getLogger("cryptobeam.collect.progress")
EXIT_UNRECONCILED, EXIT_USER_ERROR, EXIT_PIPELINE_FAILED = 1, 2, 3  # README's exit codes
LOGGED_FAILURES = 20  # then only every 100th, so a node down for hours cannot flood the log


class ChainKafkaOutput(KafkaOutput):
    """The collectors' producer and dead-letter topic, with a topic per chain record type."""

    def __init__(self, bootstrap: str, chain: str, blocks_topic: str, transfers_topic: str, dead_letter_topic: str):
        super().__init__(bootstrap, dead_letter_topic=dead_letter_topic)
        self.chain = chain
        self.topics = {BLOCK: blocks_topic, TOKEN_TRANSFER: transfers_topic}

    def event(self, event: ChainEvent) -> None:
        if event.kind == DEAD_LETTER:
            self.dead_letter(event.record)  # keyed by its exchange, the chain
            return
        record = event.record
        self.produce(self.topics[event.kind], encode(record, event.kind), self.chain, record["event_time"] // 1000)


@dataclass(frozen=True)
class ChainCollectSettings:
    rpc_url: str
    chain: str = "ethereum"
    reorg_depth: int = DEFAULT_REORG_DEPTH
    safe_depth: int = DEFAULT_SAFE_DEPTH
    finalized_depth: int = DEFAULT_FINALIZED_DEPTH
    poll_interval: float = DEFAULT_POLL_INTERVAL
    checkpoint: str | None = None
    from_block: int | None = None  # None: the node's head when no checkpoint says otherwise
    max_blocks: int | None = None  # blocks published (retractions not counted)
    until_block: int | None = None
    max_seconds: float | None = None
    blocks_per_step: int = DEFAULT_BLOCKS_PER_STEP
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.5, cap=30.0))
    progress_every: float | None = 10.0
    flush_seconds: float = 30.0


class ChainCollector:
    """Follows one chain into Kafka until stopped; ``run()`` returns the counters."""

    def __init__(self, settings: ChainCollectSettings, output: ChainKafkaOutput, node=None):
        self.settings, self.output = settings, output
        self.state = FollowerState(
            settings.chain,
            settings.reorg_depth,
            settings.safe_depth,
            settings.finalized_depth,
            source=getattr(node, "where", None) or display_url(settings.rpc_url),
        )
        self.resumed = bool(settings.checkpoint) and self.state.load(settings.checkpoint)
        self.node = node if node is not None else EthereumRpc(settings.rpc_url)
        if getattr(self.node, "on_retry", False) is None:
            self.node.on_retry = self.count_node_retry
        self.follower = ChainFollower(
            self.node, self.state, start_block=settings.from_block, max_blocks_per_step=settings.blocks_per_step
        )
        self.stop_reason: str | None = None
        self.failure: Exception | None = None
        self._stop = threading.Event()

    @property
    def counts(self) -> ChainCounters:
        return self.state.counts

    def stop(self, reason: str = "stopped") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            log.info("stopping: %s", reason)
            self._stop.set()

    def run(self) -> ChainCounters:
        """Collect until stopped, a limit is reached or the chain cannot be followed; raises
        ``ReorgTooDeep`` after publishing its dead letters and flushing."""
        settings, started = self.settings, time.monotonic()
        failures, last_progress = 0, time.monotonic()
        if self.resumed:
            ignored = " (--from-block is for a first start)" if settings.from_block is not None else ""
            log.info(
                "%s: resuming after block %s from %s%s", settings.chain, self.state.tip, settings.checkpoint, ignored
            )
        try:
            while not self._stop.is_set():
                if settings.max_seconds and time.monotonic() - started >= settings.max_seconds:
                    self.stop(f"{settings.max_seconds:g} s elapsed")
                    break
                try:
                    events = self.follower.step(settings.until_block)
                except ReorgTooDeep as error:
                    self._publish([ChainEvent(DEAD_LETTER, letter) for letter in error.dead_letters], checkpoint=False)
                    self.failure = error
                    self.stop("a reorg deeper than the blocks kept")
                    break
                except UnreadableAnswer as error:
                    if not self._publish([ChainEvent(DEAD_LETTER, error.dead_letter)], checkpoint=False):
                        break
                    failures += 1
                    self._wait_after_failure(error, failures)
                    continue
                except (RpcError, NodeInconsistent) as error:
                    self.counts.node_retries += 1
                    failures += 1
                    self._wait_after_failure(error, failures)
                    continue
                failures = 0
                if events and not self._publish(events):
                    break
                if self._limit_reached():
                    break
                if settings.progress_every and time.monotonic() - last_progress >= settings.progress_every:
                    progress_log.info("%s: %s", settings.chain, self.progress_line())
                    last_progress = time.monotonic()
                if not events or self.follower.caught_up:
                    self._stop.wait(settings.poll_interval)
        finally:
            self.counts.undelivered = max(self.counts.undelivered, self.output.close(settings.flush_seconds))
        if self.failure is not None:
            raise self.failure
        return self.counts

    def _publish(self, events: list[ChainEvent], checkpoint: bool = True) -> bool:
        """Hand the events to Kafka and wait until it acknowledged them all, then checkpoint. False if
        it refused some, or the run was stopped while waiting: the run ends without a checkpoint."""
        for event in events:
            self.output.event(event)
        while undelivered := self.output.flush(self.settings.flush_seconds):
            if self.output.failed or self._stop.is_set():
                self.counts.undelivered = undelivered
                self.stop(f"Kafka did not acknowledge {undelivered:,} message(s)")
                return False
            # The producer keeps trying until its message timeout fails them: a broker that is
            # back by then loses nothing, so the node waits rather than the run ending.
            log.warning("%s: Kafka has not acknowledged %d message(s) yet; waiting", self.settings.chain, undelivered)
        if checkpoint and self.settings.checkpoint:
            self.state.save(self.settings.checkpoint)
        return True

    def _limit_reached(self) -> bool:
        settings, state = self.settings, self.state
        if settings.max_blocks and self.counts.blocks_published >= settings.max_blocks:
            self.stop(f"{settings.max_blocks:,} blocks published")
        elif settings.until_block is not None and state.tip is not None and state.tip >= settings.until_block:
            self.stop(f"block {settings.until_block:,} reached")
        return self._stop.is_set()

    def _wait_after_failure(self, error: Exception, failures: int) -> None:
        delay = self.settings.backoff.delay(failures - 1)
        if failures <= LOGGED_FAILURES or failures % 100 == 0:
            log.warning(
                "%s: %s; trying again in %.1f s (failure %d in a row)", self.settings.chain, error, delay, failures
            )
        self._stop.wait(delay)

    def count_node_retry(self, _attempt: int, _problem: str) -> None:
        """The client's hook: each request it sends again counts as a node retry."""
        self.counts.node_retries += 1

    def progress_line(self) -> str:
        counts, state = self.counts, self.state
        return (
            f"tip {state.tip}, finalized up to {state.finalized_up_to}, blocks {counts.blocks_published:,}, "
            f"transfers {counts.transfers_published:,}, retracted {counts.retracted:,} in {counts.reorgs:,} reorg(s), "
            f"dead letters {counts.dead_letters:,}, node retries {counts.node_retries:,}"
        )


# -- the command line ------------------------------------------------------------------------------


class ChainOptionError(ValueError):
    """Options that cannot work; shown as one line."""


def chain_settings(args) -> ChainCollectSettings:
    """The settings from the options, or ``ChainOptionError`` naming what is wrong."""
    exchange_only = [flag for flag in EXCHANGE_OPTIONS if getattr(args, flag.lstrip("-").replace("-", "_"), None)]
    if exchange_only:
        raise ChainOptionError(
            f"{', '.join(exchange_only)}: exchanges' options; --chain collects a chain, in a run of its own"
        )
    if not args.rpc:
        raise ChainOptionError("--chain needs --rpc URL, the node's JSON-RPC endpoint")
    try:
        checked_rpc_url(args.rpc)
    except RpcError as error:
        raise ChainOptionError(str(error)) from None
    if getattr(args, "metrics_port", None) is not None:
        raise ChainOptionError("--metrics-port is not offered with --chain")
    topics = [args.blocks_topic, args.transfers_topic, getattr(args, "dead_letter_topic", "dead_letters")]
    if len(set(topics)) != len(topics):
        raise ChainOptionError("--blocks-topic, --transfers-topic and --dead-letter-topic must differ")
    for flag, value, least in (
        ("--reorg-depth", args.reorg_depth, 1),
        ("--safe-depth", args.safe_depth, 0),
        ("--finalized-depth", args.finalized_depth, 0),
        ("--from-block", args.from_block, 0),
        ("--max-blocks", args.max_blocks, 1),
        ("--until-block", args.until_block, 0),
    ):
        if value is not None and value < least:
            raise ChainOptionError(f"{flag} must be at least {least}")
    if args.safe_depth > args.finalized_depth:
        raise ChainOptionError("--safe-depth must be at most --finalized-depth")
    if not args.poll_interval > 0:
        raise ChainOptionError("--poll-interval must be positive")
    max_seconds = getattr(args, "max_seconds", None)
    if max_seconds is not None and not max_seconds > 0:
        raise ChainOptionError("--max-seconds must be positive")
    try:
        backoff = Backoff(base=getattr(args, "backoff_base", 0.5), cap=getattr(args, "backoff_max", 30.0))
    except ValueError:
        raise ChainOptionError("--backoff-base must be positive and at most --backoff-max") from None
    return ChainCollectSettings(
        rpc_url=args.rpc,
        chain=args.chain,
        reorg_depth=args.reorg_depth,
        safe_depth=args.safe_depth,
        finalized_depth=args.finalized_depth,
        poll_interval=args.poll_interval,
        checkpoint=args.checkpoint,
        from_block=args.from_block,
        max_blocks=args.max_blocks,
        until_block=args.until_block,
        max_seconds=max_seconds,
        backoff=backoff,
        progress_every=None if getattr(args, "no_progress", False) else 10.0,
    )


def summary_table(collector: ChainCollector, args, elapsed: float):
    counts, state = collector.counts, collector.state
    table = Table(title=f"cryptobeam collect {args.chain} → {args.kafka}/{args.blocks_topic}, {args.transfers_topic}")
    table.add_column("collector")
    table.add_column(args.chain, justify="right")
    for label, value in counts.rows():
        table.add_row(label, f"{value:,}")
    table.add_row("records read", f"{counts.read:,}")
    table.add_row("  = published + duplicates + dead letters", "yes" if counts.reconciles else "NO")
    table.add_row("net records (published - retracted)", f"{counts.published - counts.retracted:,}")
    table.add_row("followed up to block", "" if state.tip is None else f"{state.tip:,}")
    table.add_row("finalized up to block", "" if state.finalized_up_to is None else f"{state.finalized_up_to:,}")
    table.add_row("elapsed", f"{elapsed:,.1f} s")
    table.add_row("stopped because", collector.stop_reason or "")
    return table


def run_chain_collect(args) -> int:
    """``collect --chain``: 0 after a clean stop, 2 for a user error (one line), 1 for a reorg deeper
    than kept or counts that do not reconcile, 3 when Kafka did not take every message."""

    def error(message: str, code: int) -> int:
        print(f"cryptobeam: error: {message}", file=sys.stderr)
        return code

    try:
        settings = chain_settings(args)
        check_reachable(args.kafka)
    except (ChainOptionError, KafkaUnreachable) as problem:
        return error(str(problem), EXIT_USER_ERROR)
    node = None
    try:
        node = EthereumRpc(settings.rpc_url, attempts=2)
        node.chain_id()  # a wrong --rpc is a user error now, not retries forever
    except RpcError as problem:
        return error(f"cannot use the node: {problem}", EXIT_USER_ERROR)
    finally:
        if node is not None:
            node.close()
    _log_to_stderr()
    output = ChainKafkaOutput(
        args.kafka,
        settings.chain,
        args.blocks_topic,
        args.transfers_topic,
        getattr(args, "dead_letter_topic", "dead_letters"),
    )
    try:
        collector = ChainCollector(settings, output)
    except CheckpointError as problem:
        output.close(0)
        return error(str(problem), EXIT_USER_ERROR)
    started = time.monotonic()
    failure = None
    previous = {}
    if threading.current_thread() is threading.main_thread():  # only the main thread may take signals
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, lambda number, _frame: collector.stop(f"received {signal.Signals(number).name}"))
    try:
        collector.run()
    except ReorgTooDeep as problem:
        failure = problem
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        collector.node.close()
    Console().print(summary_table(collector, args, time.monotonic() - started))
    counts = collector.counts
    if failure is not None:
        return error(str(failure), EXIT_UNRECONCILED)
    if counts.undelivered:
        return error(f"{counts.undelivered:,} message(s) were not delivered to Kafka", EXIT_PIPELINE_FAILED)
    if not counts.reconciles:
        return error(
            f"the counts do not reconcile: {counts.read:,} read, {counts.published:,} published, "
            f"{counts.duplicates:,} duplicates, {counts.dead_letters:,} dead letters",
            EXIT_UNRECONCILED,
        )
    return 0


def _log_to_stderr() -> None:
    for name in ("cryptobeam.collect", "cryptobeam.ethereum"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if not any(getattr(h, "_cryptobeam_collect", False) for h in logger.handlers):
            handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
            handler._cryptobeam_collect = True  # the mark collect_command's handler carries too
            logger.addHandler(handler)
