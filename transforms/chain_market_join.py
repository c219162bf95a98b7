"""The join of on-chain activity with market bars in event-time windows (``chain_market_fusion``).

For each fusion (``transforms.chain_spec.Fusion``): the market series' bars and the asset's
``token_activity`` and ``exchange_flows`` rows are keyed by the series' window and grouped in
event-time windows of that length. A window's group fires when the watermark passes its end, and
the watermark of a grouping is the older of its inputs': the join waits for both sides. A late
pane of either side (a late trade, a retraction) fires a late pane of the join, which keeps the
newest pane of every input row, so the panes accumulate. A window only one side has is emitted
with the other side null and flagged (``has_market``, ``has_chain``), never dropped.

Windows are assigned from the rows' own ``window_start``, not their timestamps: consolidated bars
are released by a stateful step after their window, stamped with its timer's time.
"""

from __future__ import annotations

import typing
from fractions import Fraction

import apache_beam as beam
from apache_beam.transforms import trigger as triggers
from apache_beam.transforms import window as windows
from apache_beam.utils.timestamp import Duration, Timestamp

from schemas import field_names
from transforms.bar_kinds import DAY_MICROS
from transforms.bar_spec import BarSpec
from transforms.bars import PANE_TIMING_NAMES
from transforms.chain_spec import Fusion

MARKET, ACTIVITY, FLOWS = "market", "activity", "flows"
FusionKey = typing.Tuple[int, int]  # (fusion's position in the spec, window start)


class _WindowOfRow(windows.NonMergingWindowFn):
    """The window a keyed row names (the key's window start), whatever its timestamp."""

    def __init__(self, size_us: int):
        self._size_us = size_us

    def assign(self, context):
        (_fusion, start), _row = context.element
        return [windows.IntervalWindow(Timestamp(micros=start), Timestamp(micros=start + self._size_us))]

    def get_window_coder(self):
        return beam.coders.coders.IntervalWindowCoder()


def market_interval(spec: BarSpec, fusion: Fusion):
    return spec.consolidation.interval if fusion.table == "bars_consolidated" else spec.interval


def _keyed(rows, label: str, position: int, side: str, size_us: int, select):
    def key(row):
        if select(row):
            yield (position, row["window_start"] // size_us * size_us), (side, row)

    return rows | label >> beam.FlatMap(key).with_output_types(typing.Tuple[FusionKey, typing.Any])


def _newest(rows: list[dict], identity) -> list[dict]:
    newest: dict = {}
    for row in rows:
        key = identity(row)
        if key not in newest or row["pane_index"] > newest[key]["pane_index"]:
            newest[key] = row
    return list(newest.values())


def _whole_tokens(rows: list[dict], raw_field: str, tokens) -> float | None:
    """The rows' exact raw amounts in whole tokens, summed exactly and rounded once; None if a
    token's decimals are unknown."""
    total = Fraction(0)
    for row in rows:
        decimals = tokens[(row["exchange"], row["token_address"])].decimals
        if decimals is None:
            return None
        total += Fraction(int(row[raw_field]), 10**decimals)
    return float(total)


class _FuseWindow(beam.DoFn):
    def __init__(self, spec: BarSpec):
        self._spec = spec
        self._labelled = spec.chain.labels is not None
        self._tokens = {(t.chain, t.address): t for t in spec.chain.tokens}
        self._absent = dict.fromkeys(field_names("chain_market_fusion"))  # a side a window lacks stays null

    def process(self, element, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        (position, start), sides = element
        fusion = self._spec.chain.fusions[position]
        rows: dict[str, list[dict]] = {MARKET: [], ACTIVITY: [], FLOWS: []}
        for side, row in sides:
            rows[side].append(row)
        interval = market_interval(self._spec, fusion)
        fused = {
            **self._absent,
            "exchange": fusion.exchange,
            "symbol": fusion.symbol,
            "asset": fusion.asset,
            "interval": interval.text,
            "window_start": start,
            "window_end": start + interval.micros,
            **self._market_fields(rows[MARKET]),
            **self._chain_fields(rows[ACTIVITY], rows[FLOWS]),
            "pane_timing": PANE_TIMING_NAMES[pane.timing],
            "pane_index": int(pane.index),
            "is_final": bool(pane.is_last),
        }
        yield fused

    @staticmethod
    def _market_fields(bars: list[dict]) -> dict:
        bars = _newest(bars, lambda bar: bar.get("is_filled", False))
        traded = [bar for bar in bars if not bar.get("is_filled", False)]
        bar = (traded or bars or [None])[0]
        if bar is None:
            return {"has_market": False}
        return {
            "has_market": True,
            **{name: bar.get(name) for name in ("open", "high", "low", "close", "vwap", "price")},
            "market_volume": bar.get("volume"),
            "market_trades": bar.get("trade_count"),
        }

    def _chain_fields(self, activity: list[dict], flows: list[dict]) -> dict:
        activity = _newest(activity, lambda row: (row["exchange"], row["token_address"], row["window_start"]))
        if not activity:
            return {"has_chain": False}
        fields = {
            "has_chain": True,
            "transfer_count": sum(row["transfer_count"] for row in activity),
            "transfer_volume": _whole_tokens(activity, "volume_raw", self._tokens),
        }
        if self._labelled:
            flows = _newest(
                flows, lambda row: (row["exchange"], row["token_address"], row["entity"], row["window_start"])
            )
            inflow = _whole_tokens(flows, "inflow_raw", self._tokens)
            outflow = _whole_tokens(flows, "outflow_raw", self._tokens)
            fields.update(
                exchange_inflow=inflow,
                exchange_outflow=outflow,
                exchange_netflow=_whole_tokens(flows, "netflow_raw", self._tokens),
            )
        return fields


class JoinChainWithMarket(beam.PTransform):
    """{table name: rows} (the run's tables so far) -> ``chain_market_fusion`` rows, in the global window."""

    def __init__(self, spec: BarSpec, label=None):
        super().__init__(label)
        self._spec = spec

    def _windowing(self, size_us: int, consolidated: bool) -> beam.WindowInto:
        spec = self._spec
        early = triggers.AfterProcessingTime(spec.early_firing_seconds) if spec.early_firing_seconds else None
        # Both sides' late panes come within the run's lateness and slack after their windows;
        # consolidated bars are released by a day-by-day step, up to a day after theirs.
        lateness = spec.allowed_lateness_micros + 2 * spec.runner_slack_micros + (DAY_MICROS if consolidated else 0)
        return beam.WindowInto(
            _WindowOfRow(size_us),
            trigger=triggers.AfterWatermark(early=early, late=triggers.AfterCount(1)),
            accumulation_mode=triggers.AccumulationMode.ACCUMULATING,
            allowed_lateness=Duration(micros=lateness),
            timestamp_combiner=windows.TimestampCombiner.OUTPUT_AT_EOW,
        )

    def expand(self, tables: dict):
        spec = self._spec
        fused = []
        for position, fusion in enumerate(spec.chain.fusions):
            if tables.get(fusion.table) is None:
                raise ValueError(f"fusing {fusion.asset} with {fusion.table} needs the run to build {fusion.table}")
            size_us = market_interval(spec, fusion).micros
            if size_us % spec.interval.micros:
                raise ValueError(
                    f"the fusion's windows ({market_interval(spec, fusion).text}) must be a whole number of the "
                    f"run's {spec.interval.text} windows"
                )
            tokens = spec.chain.asset_tokens(fusion.asset)
            label = f"{fusion.asset}@{fusion.exchange}:{fusion.symbol}"
            sides = [
                _keyed(
                    tables[fusion.table],
                    f"Market[{label}]",
                    position,
                    MARKET,
                    size_us,
                    lambda row, f=fusion: row["exchange"] == f.exchange and row["symbol"] == f.symbol,
                )
            ]
            for table, side in (("token_activity", ACTIVITY), ("exchange_flows", FLOWS)):
                if tables.get(table) is not None:
                    sides.append(
                        _keyed(
                            tables[table],
                            f"{side.title()}[{label}]",
                            position,
                            side,
                            size_us,
                            lambda row, t=tokens: (row["exchange"], row["token_address"]) in t,
                        )
                    )
            fused.append(
                sides
                | f"Sides[{label}]" >> beam.Flatten()
                | f"Windows[{label}]" >> self._windowing(size_us, fusion.table == "bars_consolidated")
                | f"Group[{label}]" >> beam.GroupByKey()
                | f"Fuse[{label}]" >> beam.ParDo(_FuseWindow(spec))
            )
        return (
            fused
            | "AllFusions" >> beam.Flatten()
            | "FusionToGlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
        )
