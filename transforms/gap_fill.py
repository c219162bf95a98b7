"""Fill gaps the exchange-kline way: an interval with no trades gets O=H=L=C=previous close, volume 0.

A per-(exchange, symbol) event-time timer drives it, so the same transform serves a bounded
backfill (the timer fires once, at the end) and a live stream (it fires as the watermark moves).
Only intervals between a symbol's first and last bar are filled.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms.bar_spec import BarSpec
from transforms.keys import BySymbol


def filled_bar(exchange: str, symbol: str, spec: BarSpec, window_start: int, previous_close: float) -> dict:
    return {
        "exchange": exchange,
        "symbol": symbol,
        "interval": spec.interval.text,
        "window_start": window_start,
        "window_end": window_start + spec.interval.micros,
        "open": previous_close,
        "high": previous_close,
        "low": previous_close,
        "close": previous_close,
        "volume": 0.0,
        "quote_volume": 0.0,
        "vwap": None,
        "trade_count": 0,
        "buy_volume": 0.0,
        "sell_volume": 0.0,
        "first_trade_id": None,
        "last_trade_id": None,
        "duplicate_count": 0,
        "is_filled": True,
        "pane_timing": "ON_TIME",
        "pane_index": 0,
        "is_final": True,
    }


def gaps_between(previous: tuple[int, float] | None, closes: dict[int, float], step: int):
    """Walk settled window closes in order; yield (window_start, previous close) for each empty interval."""
    for window_start in sorted(closes):
        if previous is not None and window_start <= previous[0]:
            continue  # a late revision of a window already settled
        if previous is not None:
            for empty in range(previous[0] + step, window_start, step):
                yield empty, previous[1]
        previous = (window_start, closes[window_start])


class _FillGapsFn(beam.DoFn):
    """Settled closes are appended to a bag (O(1) per bar); the timer reads them once, at the
    watermark, fills the gaps in order and keeps only what is not settled yet."""

    CLOSES = BagStateSpec("closes", PickleCoder())
    LAST = ReadModifyWriteStateSpec("last_settled", PickleCoder())
    NEWEST = ReadModifyWriteStateSpec("newest_window", PickleCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, spec: BarSpec):
        self._spec = spec
        self._filled = beam.metrics.Metrics.counter("cryptobeam", "filled_bars")

    def process(
        self,
        element,
        closes=beam.DoFn.StateParam(CLOSES),
        newest_state=beam.DoFn.StateParam(NEWEST),
        flush=beam.DoFn.TimerParam(FLUSH),
    ):
        _, bar = element
        if bar["pane_timing"] == "EARLY":
            return  # early panes are provisional; the gap decision waits for the on-time pane
        closes.add((bar["window_start"], bar["pane_index"], bar["close"]))
        newest = newest_state.read()
        if newest is None or bar["window_start"] > newest:
            newest_state.write(bar["window_start"])
            flush.set(Timestamp(micros=bar["window_start"] + self._spec.interval.micros))

    @on_timer(FLUSH)
    def on_flush(
        self,
        key=beam.DoFn.KeyParam,
        fired_at=beam.DoFn.TimestampParam,
        closes=beam.DoFn.StateParam(CLOSES),
        last_state=beam.DoFn.StateParam(LAST),
    ):
        step = self._spec.interval.micros
        latest_pane: dict[int, tuple[int, float]] = {}
        waiting = []
        for window_start, pane_index, close in closes.read():
            if window_start + step > fired_at.micros:
                waiting.append((window_start, pane_index, close))
            elif window_start not in latest_pane or pane_index >= latest_pane[window_start][0]:
                latest_pane[window_start] = (pane_index, close)
        settled = {w: close for w, (_, close) in latest_pane.items()}
        previous = last_state.read()
        exchange, symbol = key
        for window_start, close in gaps_between(previous, settled, step):
            self._filled.inc()
            yield filled_bar(exchange, symbol, self._spec, window_start, close)
        if settled:
            newest = max(settled)
            if previous is None or newest > previous[0]:
                last_state.write((newest, settled[newest]))
        closes.clear()
        for item in waiting:
            closes.add(item)


class FillGaps(beam.PTransform):
    """Bars -> the filled bars for the empty intervals between them (only the fills)."""

    def __init__(self, spec: BarSpec, label=None):
        super().__init__(label)
        self._spec = spec

    def expand(self, bars):
        return (
            bars
            | "Unwindow" >> beam.WindowInto(beam.window.GlobalWindows())
            | "KeyBySymbol" >> beam.Map(lambda bar: ((bar["exchange"], bar["symbol"]), bar)).with_output_types(BySymbol)
            | "Fill" >> beam.ParDo(_FillGapsFn(self._spec))
        )
