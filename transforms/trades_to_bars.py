"""The one code path: raw trade records in, bars and dead letters out.

Backfill and live stream both apply this transform; only the source that feeds it, the
parser it is given, the sinks that take its outputs and the runner differ.
"""

from __future__ import annotations

import apache_beam as beam

from transforms.bar_spec import BarSpec
from transforms.block_join_steps import JoinBlocks, SettleBlocks
from transforms.computations import COMPUTATIONS
from transforms.event_time_skeleton import event_time_skeleton
from transforms.feed_status import FEED_STATUS_COUNTERS
from transforms.parse import Parser, ParseTrades
from transforms.record_types import record_type
from transforms.token_transfers import TOKEN_TRANSFER_COUNTERS


class TradesToBars(beam.PTransform):
    """Parse, then the event-time skeleton (validate, route late data and stamp event time,
    window, dedupe), then every computation the spec asks for (``transforms.computations``):
    time bars (with gaps filled if asked), information bars, consolidated bars.

    Takes raw trade batches, or a dict of raw batches by record type, each through the same
    skeleton: ``trades``; ``feed_status`` with ``status_parser``, collectors' connection states for
    the computations that use them (consolidated bars exclude disconnected venues);
    ``token_transfers`` with ``transfer_parser``, on-chain ERC-20 transfers for the chain tables
    (``transforms.computations.token_flows``); ``blocks`` with ``block_parser`` (bounded runs only),
    the blocks the transfers take their block hashes and times from where they lack them
    (``transforms.block_join``). A run without trades asks for no table of them.

    Returns ``{"bars": time bars, "tables": {table: bars of each kind}, "dead_letters": ...}``;
    ``bars`` is None when the spec asks for no time bars.
    """

    def __init__(
        self,
        spec: BarSpec,
        parser: Parser,
        min_time_us: int | None = None,
        max_time_us: int | None = None,
        status_parser: Parser | None = None,
        transfer_parser: Parser | None = None,
        block_parser: Parser | None = None,
        label=None,
    ):
        super().__init__(label)
        self._spec = spec
        self._parser, self._status_parser, self._transfer_parser = parser, status_parser, transfer_parser
        self._block_parser = block_parser
        self._time_bounds = (min_time_us, max_time_us)

    def expand(self, inputs):
        by_type = inputs if isinstance(inputs, dict) else {"trades": inputs}
        unique, dead_letters = None, []
        if by_type.get("trades") is not None:
            parsed = by_type["trades"] | "Parse" >> ParseTrades(self._parser)
            unique, dead_letters = event_time_skeleton(
                parsed.trades, record_type("trade"), self._spec, self._time_bounds
            )
            dead_letters = [parsed.dead_letter, *dead_letters]
        others = {}
        if by_type.get("feed_status") is not None:
            statuses = by_type["feed_status"] | "FeedStatus" >> _RecordsSkeleton(
                self._spec, self._status_parser, self._time_bounds, "feed_status", FEED_STATUS_COUNTERS
            )
            others["feed_status"] = statuses["unique"]
            dead_letters.append(statuses["dead_letters"])
        blocks = None
        if by_type.get("blocks") is not None:
            settled = by_type["blocks"] | "Blocks" >> SettleBlocks(self._block_parser)
            blocks = settled["lookup"]
            dead_letters.append(settled["dead_letters"])
        if by_type.get("token_transfers") is not None:
            transfers = by_type["token_transfers"] | "TokenTransfers" >> _RecordsSkeleton(
                self._spec, self._transfer_parser, self._time_bounds, "token_transfer", TOKEN_TRANSFER_COUNTERS, blocks
            )
            others["token_transfer"] = transfers["unique"]
            dead_letters.append(transfers["dead_letters"])
        tables = {}
        others["tables"] = tables  # the tables computed so far, for a computation that joins them
        for computation in COMPUTATIONS:
            wanted = computation.tables(self._spec)
            if wanted and unique is None and any(table.record_type == "trade" for table in wanted):
                raise ValueError(f"{computation.name} bars are asked for, but the run reads no trades")
            if wanted:
                computed, computation_dead_letters = computation.expand(unique, self._spec, others)
                tables.update(computed)
                dead_letters += computation_dead_letters
        everything_dead = dead_letters | "AllDeadLetters" >> beam.Flatten()
        return {"bars": tables.get("bars"), "tables": tables, "dead_letters": everything_dead}


class _RecordsSkeleton(beam.PTransform):
    """Raw batches of a record type other than trades -> {"unique": deduplicated chunks, windowed,
    "dead_letters": ...}; its counters are prefixed with ``counted_as``, to be reconciled on their own.
    With ``blocks`` (the lookup of ``transforms.block_join_steps.SettleBlocks``), the parsed
    transfers are joined with them before validation."""

    def __init__(self, spec: BarSpec, parser: Parser, time_bounds: tuple, type_name: str, counted_as: str, blocks=None):
        super().__init__()
        self._spec, self._parser, self._time_bounds = spec, parser, time_bounds
        self._type_name, self._counted_as, self._blocks = type_name, counted_as, blocks

    def expand(self, raw_batches):
        parsed = raw_batches | "Parse" >> ParseTrades(self._parser, counted_as=self._counted_as)
        records, dead_letters = parsed.trades, [parsed.dead_letter]
        if self._blocks is not None:
            joined = records | "JoinBlocks" >> JoinBlocks(self._blocks)
            records = joined.joined
            dead_letters.append(joined.dead_letter)
        unique, skeleton_dead_letters = event_time_skeleton(
            records, record_type(self._type_name), self._spec, self._time_bounds, counted_as=self._counted_as
        )
        dead_letters += skeleton_dead_letters
        return {"unique": unique, "dead_letters": dead_letters | "DeadLetters" >> beam.Flatten()}
