"""``cryptobeam report OUT``: read an output directory and write one self-contained HTML page of it.

What the page holds: the accounting identity from ``_SUMMARY.json`` (and whether it reconciles);
per (exchange, symbol, interval) of the time bars, a candlestick chart whose filled bars and gaps
are marked, with trades and duplicates per window; dead letters by reason over time; late panes
and too-late records; and, where the run built consolidated bars, each venue's deviation from the
reference price and its exclusions by reason.

Design:

* Beam-free and columnar: files are read with pyarrow (only the columns a chart needs) and
  shaped with polars, never row by row, so a month of 1-minute bars reports in seconds.
* Final bars as a consumer reads them (``io_connectors.bar_reader``): the ``is_final`` pane of each
  bar, the newest file winning; a window with both a filled and a traded final bar is shown traded.
* A chart shows at most ``max_points`` buckets. Longer series are downsampled to the smallest
  display step on a ladder (5m, 15m, 1h, ...) that fits, and the chart's title says so. A bucket's
  OHLC is its bars' (first open, max high, min low, last close), volumes and counts are summed,
  and a bucket holding a filled bar or a missing window is marked as such: downsampling never
  hides a gap or a fill.
* A window without a bar is never drawn: the candles are placed on a time axis (nothing between
  two candles is interpolated), and every missing window's bucket is marked and shaded.
* plotly.js is embedded once in the page's head and every chart is a div that calls it, so the
  page opens offline and stays one file.
"""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import plotly.graph_objects as go
import plotly.io as pio
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from beam_pipelines.accounting import Accounting
from beam_pipelines.cli_common import UserError
from beam_pipelines.report_command import DEFAULT_MAX_POINTS
from io_connectors.atomic_files import write_atomically
from io_connectors.bar_reader import data_files, with_whole_partition_values
from transforms.interval import IntervalError, parse_interval

REPORT_NAME = "report.html"
SUMMARY_NAME = "_SUMMARY.json"
TIME_BARS, CONSOLIDATED, QUALITY, DEAD_LETTERS = "bars", "bars_consolidated", "quality", "dead_letter"
INFORMATION_TABLES = ("bars_ticks", "bars_volume", "bars_dollar")
DISPLAY_STEPS_S = (
    1,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    14400,
    21600,
    43200,
    86400,
    172800,
    604800,
)
"""Display steps a long series is downsampled to: the smallest multiple of the bar interval that fits."""
MAX_GAP_SHADES = 300
"""Beyond this many gap ranges a chart marks gaps with markers only (shapes are costly to draw)."""
MICROS = 1_000_000

Progress = Callable[[str], None]


@dataclass
class OutputData:
    """What the report reads from an output directory."""

    out: str
    summary: dict | None
    bars: pl.DataFrame | None = None
    """Final time bars, one per window: exchange, symbol, interval, window_us, OHLC, counts, is_filled."""
    late_panes: pl.DataFrame | None = None
    """Every LATE pane of the time and consolidated bars: table, window_us."""
    dead_letters: pl.DataFrame | None = None
    """reason, stage, event_us (null when the record had no event time)."""
    quality: pl.DataFrame | None = None
    """Final quality rows: base, quote, venue, window_us, interval, deviation_bps, excluded, exclusion_reason."""
    other_tables: dict[str, int] = field(default_factory=dict)
    """Tables the report does not chart, with their final row counts."""
    notes: list[str] = field(default_factory=list)


@dataclass
class Chart:
    section: str
    title: str
    figure: object
    chart_id: str


@dataclass
class ReportResult:
    path: str
    size: int
    charts: list[Chart]
    seconds: float


# --- reading -------------------------------------------------------------------------------------


def check_output_directory(out: str) -> None:
    """A missing, foreign or empty directory is the user's mistake: one clear line."""
    if not os.path.exists(out):
        raise UserError(f"{out} does not exist: give the --out directory of a backfill or a stream")
    if not os.path.isdir(out):
        raise UserError(f"{out} is not a directory: give the --out directory of a backfill or a stream")
    tables = [
        name
        for name in (TIME_BARS, CONSOLIDATED, QUALITY, DEAD_LETTERS, *INFORMATION_TABLES)
        if data_files(os.path.join(out, name))
    ]
    if not tables and not os.path.isfile(os.path.join(out, SUMMARY_NAME)):
        what = "is empty" if not os.listdir(out) else "is not a cryptobeam output"
        raise UserError(
            f"{out} {what}: it has no {SUMMARY_NAME} and no bars/ or dead_letter/ files "
            "(run cryptobeam backfill --out or cryptobeam stream --out first)"
        )


def read_summary(out: str) -> dict | None:
    path = os.path.join(out, SUMMARY_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            summary = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(
            f"{path} cannot be read ({type(error).__name__}: {error}); run cryptobeam validate {out}"
        ) from None
    if not isinstance(summary, dict) or "records_in" not in summary:
        raise UserError(f"{path} is not a cryptobeam run summary (no records_in)")
    return summary


def read_output(out: str, progress: Progress = lambda _: None) -> OutputData:
    check_output_directory(out)
    data = OutputData(out=out, summary=read_summary(out))
    if data.summary is None:
        data.notes.append(f"no {SUMMARY_NAME}: the run did not finish (or is still running), so there is no accounting")
    progress("reading bars/")
    bars = read_table(
        out,
        TIME_BARS,
        [
            "interval",
            "window_start",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "trade_count",
            "duplicate_count",
            "is_filled",
            "pane_timing",
            "is_final",
        ],
        data.notes,
    )
    if bars is not None:
        data.bars = final_time_bars(bars)
        data.late_panes = _late_panes(bars, TIME_BARS)
    progress("reading dead_letter/")
    dead = read_table(out, DEAD_LETTERS, ["stage", "event_time"], data.notes, partitions=("reason",))
    if dead is not None:
        data.dead_letters = dead.select("reason", "stage", event_us=pl.col("event_time").dt.epoch("us"))
    progress("reading bars_consolidated/ and quality/")
    consolidated = read_table(out, CONSOLIDATED, ["window_start", "pane_timing"], data.notes)
    if consolidated is not None:
        late = _late_panes(consolidated, CONSOLIDATED)
        data.late_panes = late if data.late_panes is None else pl.concat([data.late_panes, late])
    quality = read_table(
        out,
        QUALITY,
        ["base", "quote", "interval", "window_start", "deviation_bps", "excluded", "exclusion_reason", "is_final"],
        data.notes,
    )
    if quality is not None:
        data.quality = final_quality(quality)
    for table in INFORMATION_TABLES:
        rows = read_table(out, table, ["is_final"], data.notes)
        if rows is not None:
            data.other_tables[table] = int(rows["is_final"].sum())
    return data


def read_table(
    out: str,
    table: str,
    columns: list[str],
    notes: list[str],
    partitions: tuple[str, ...] = ("exchange", "symbol", "date"),
) -> pl.DataFrame | None:
    """The ``columns`` of every readable Parquet file of a table, with its partition columns and a
    ``file`` column (a later run's file sorts later); None when the table is absent. A file that
    cannot be read is left out and named in ``notes``: the report shows what it can."""
    root = os.path.join(out, table)
    files = data_files(root)
    if not files:
        return None
    partitioning = ds.partitioning(pa.schema([(name, pa.string()) for name in partitions]), flavor="hive")
    dataset = ds.dataset(
        files, format="parquet", partitioning=partitioning, partition_base_dir=root, exclude_invalid_files=True
    )
    readable = set(dataset.files)
    for path in files:
        if path not in readable:
            notes.append(f"{os.path.relpath(path, out)} is not a readable Parquet file: left out of the charts")
    wanted = [name for name in columns if name in dataset.schema.names] + list(partitions)
    tables = []
    for fragment in dataset.get_fragments():
        try:
            part = with_whole_partition_values(fragment, fragment.to_table(columns=wanted, schema=dataset.schema))
        except (pa.ArrowException, OSError) as error:
            notes.append(f"{os.path.relpath(fragment.path, out)} cannot be read ({type(error).__name__}): left out")
            continue
        tables.append(
            part.append_column("file", pa.array([os.path.basename(fragment.path)] * part.num_rows, pa.string()))
        )
    if not tables:
        return None
    return pl.from_arrow(pa.concat_tables(tables, promote_options="default"))


def final_time_bars(rows: pl.DataFrame) -> pl.DataFrame:
    """One final bar per window: the newest file's final pane of each bar; a window with a traded
    bar and a filled one (a stream filled it, then a late trade arrived) is shown traded."""
    key = ["exchange", "symbol", "interval", "window_start"]
    return (
        rows.filter(pl.col("is_final"))
        .sort("file", maintain_order=True)
        .unique(subset=[*key, "is_filled"], keep="last", maintain_order=True)
        .sort("is_filled", maintain_order=True)
        .unique(subset=key, keep="first", maintain_order=True)
        .with_columns(window_us=pl.col("window_start").dt.epoch("us"))
        .drop("window_start", "pane_timing", "is_final", "file", "date")
        .sort(["exchange", "symbol", "interval", "window_us"])
    )


def final_quality(rows: pl.DataFrame) -> pl.DataFrame:
    key = ["exchange", "symbol", "interval", "window_start"]
    return (
        rows.filter(pl.col("is_final"))
        .sort("file", maintain_order=True)
        .unique(subset=key, keep="last", maintain_order=True)
        .select(
            "base",
            "quote",
            "interval",
            venue=pl.format("{}:{}", "exchange", "symbol"),
            window_us=pl.col("window_start").dt.epoch("us"),
            deviation_bps=pl.col("deviation_bps"),
            excluded=pl.col("excluded"),
            exclusion_reason=pl.col("exclusion_reason"),
        )
        .sort(["base", "quote", "venue", "window_us"])
    )


def _late_panes(rows: pl.DataFrame, table: str) -> pl.DataFrame:
    return rows.filter(pl.col("pane_timing") == "LATE").select(
        table=pl.lit(table), window_us=pl.col("window_start").dt.epoch("us")
    )


# --- downsampling --------------------------------------------------------------------------------


def display_step(span_us: int, interval_us: int, max_points: int) -> int:
    """The smallest display step (a multiple of the interval, from DISPLAY_STEPS_S) at which a
    series spanning ``span_us`` has at most ``max_points`` buckets."""

    def fits(step: int) -> bool:
        return -(-span_us // step) <= max_points

    if fits(interval_us):
        return interval_us
    for seconds in DISPLAY_STEPS_S:
        step = seconds * MICROS
        if step > interval_us and step % interval_us == 0 and fits(step):
            return step
    return -(-span_us // (max_points * interval_us)) * interval_us


def bucket_of(column: pl.Expr, step_us: int, offset_us: int = 0) -> pl.Expr:
    return (column - offset_us) // step_us * step_us + offset_us


def downsample(bars: pl.DataFrame, interval_us: int, step_us: int, offset_us: int = 0) -> pl.DataFrame:
    """One series' bars (one per window: ``window_us``, OHLC, ``volume``, ``trade_count``,
    ``duplicate_count``, ``is_filled``) as display buckets of ``step_us`` (a multiple of the
    interval; buckets aligned like the windows, by ``offset_us``).

    Every bucket from the first bar's to the last bar's is present: OHLC of its bars (first
    open, max high, min low, last close; null with no bar), volume, trades and duplicates summed
    (null with no bar), ``bars`` and ``filled`` counted, and ``missing``: windows between the
    series' first and last bar that fall in the bucket and have no bar (gaps)."""
    if bars.is_empty():
        return pl.DataFrame(
            schema={
                "bucket_us": pl.Int64,
                "open": pl.Float64,
                "high": pl.Float64,
                "low": pl.Float64,
                "close": pl.Float64,
                "volume": pl.Float64,
                "trade_count": pl.Int64,
                "duplicate_count": pl.Int64,
                "bars": pl.Int64,
                "filled": pl.Int64,
                "missing": pl.Int64,
            }
        )
    bars = bars.sort("window_us")
    first, last = int(bars["window_us"][0]), int(bars["window_us"][-1])
    end = last + interval_us
    grouped = bars.group_by(
        bucket_of(pl.col("window_us"), step_us, offset_us).alias("bucket_us"), maintain_order=True
    ).agg(
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        pl.col("volume").sum(),
        pl.col("trade_count").sum(),
        pl.col("duplicate_count").sum(),
        bars=pl.len().cast(pl.Int64),
        filled=pl.col("is_filled").cast(pl.Int64).sum(),
    )
    first_bucket = (first - offset_us) // step_us * step_us + offset_us
    buckets = pl.DataFrame({"bucket_us": pl.int_range(first_bucket, end, step_us, dtype=pl.Int64, eager=True)})
    low = pl.max_horizontal(pl.col("bucket_us"), pl.lit(first))
    high = pl.min_horizontal(pl.col("bucket_us") + step_us, pl.lit(end))
    windows_before = lambda moment: -((first - moment) // interval_us)  # ceil((moment - first) / interval)  # noqa: E731
    return (
        buckets.join(grouped, on="bucket_us", how="left", coalesce=True)
        .with_columns(pl.col("bars").fill_null(0), pl.col("filled").fill_null(0))
        .with_columns(missing=(windows_before(high) - windows_before(low) - pl.col("bars")).cast(pl.Int64))
    )


def gap_ranges(buckets: pl.DataFrame, step_us: int) -> list[tuple[int, int, int]]:
    """(start, end, missing windows) of each run of consecutive buckets that miss windows."""
    runs: list[list[int]] = []
    for start, missing in buckets.filter(pl.col("missing") > 0).select("bucket_us", "missing").iter_rows():
        if runs and runs[-1][1] == start:
            runs[-1][1], runs[-1][2] = start + step_us, runs[-1][2] + missing
        else:
            runs.append([start, start + step_us, missing])
    return [tuple(run) for run in runs]


def duration_text(micros: int) -> str:
    seconds = micros // MICROS
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# --- figures -------------------------------------------------------------------------------------


def _times(micros):
    """Bucket starts as UTC date-time text (plotly draws them as given), in a numpy array: plotly
    takes arrays whole where it checks lists item by item."""
    return pl.Series(micros, dtype=pl.Int64).cast(pl.Datetime("us")).dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy()


def _padded(buckets: pl.Series, step_us: int):
    """An x range a bucket wider than the data on each side: a single bucket shows at its own width."""
    return _times([int(buckets.min()) - step_us, int(buckets.max()) + step_us])


def _shown_at(step_us: int, interval_us: int, what: str) -> str:
    if step_us == interval_us:
        return ""
    return f" — shown at {duration_text(step_us)}; {duration_text(interval_us)} {what} downsampled"


def symbol_chart(exchange: str, symbol: str, interval: str, bars: pl.DataFrame, max_points: int, index: int) -> Chart:
    """Candlesticks (traded buckets, and buckets holding a filled bar in grey with a marker), gaps
    marked and shaded; trades and duplicates per bucket below on the same time axis."""

    parsed = parse_interval(interval)
    first, last = int(bars["window_us"].min()), int(bars["window_us"].max())
    step = display_step(last + parsed.micros - first, parsed.micros, max_points)
    shown = downsample(bars, parsed.micros, step, parsed.offset_micros)
    per = duration_text(step)
    gaps = gap_ranges(shown, step)
    missing = int(shown["missing"].sum())
    filled = int(shown["filled"].sum())
    title = (
        f"{exchange} {symbol} · {interval} bars{_shown_at(step, parsed.micros, 'bars')}<br><sup>"
        f"{int(shown['bars'].sum()):,} bars, {filled:,} filled (no trades), {missing:,} missing windows in "
        f"{len(gaps):,} gap(s)</sup>"
    )
    figure = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04,
        row_heights=[0.6, 0.2, 0.2],
        subplot_titles=("price", f"trades per {per}", f"duplicates absorbed per {per}"),
    )
    with_bars = shown.filter(pl.col("bars") > 0)
    width = step / 1000  # a bar on a date axis is as wide as its bucket, in milliseconds
    traded, filled_only = (
        with_bars.filter(pl.col("filled") < pl.col("bars")),
        with_bars.filter(pl.col("filled") == pl.col("bars")),
    )
    figure.add_trace(_candles(traded, "traded"), row=1, col=1)
    if filled_only.height:
        grey = {"line": {"color": "#8c8c8c"}, "fillcolor": "#d0d0d0"}
        figure.add_trace(_candles(filled_only, "filled (no trades)", increasing=grey, decreasing=grey), row=1, col=1)
    holding_filled = with_bars.filter(pl.col("filled") > 0)
    if holding_filled.height:
        figure.add_trace(
            go.Scatter(
                x=_times(holding_filled["bucket_us"]),
                y=holding_filled["low"].to_numpy(),
                mode="markers",
                name="holds filled bar(s)",
                marker={"symbol": "triangle-up", "color": "#6c6c6c", "size": 6},
                customdata=holding_filled["filled"].to_numpy(),
                hovertemplate="%{customdata} filled bar(s)<extra></extra>",
            ),
            row=1,
            col=1,
        )
    if gaps:
        last_close = shown.select("bucket_us", "missing", pl.col("close").forward_fill().backward_fill()).filter(
            pl.col("missing") > 0
        )
        figure.add_trace(
            go.Scatter(
                x=_times(last_close["bucket_us"]),
                y=last_close["close"].to_numpy(),
                mode="markers",
                name="gap (missing windows)",
                marker={"symbol": "x", "color": "#d62728", "size": 8},
                customdata=last_close["missing"].to_numpy(),
                hovertemplate="%{customdata} missing window(s)<extra></extra>",
            ),
            row=1,
            col=1,
        )
        if len(gaps) <= MAX_GAP_SHADES:
            for start, stop, _ in gaps:
                # Candles and bars are centred on their bucket's start: so is the shading.
                figure.add_shape(
                    type="rect",
                    xref="x",
                    yref="paper",
                    x0=_times([start - step // 2])[0],
                    x1=_times([stop - step // 2])[0],
                    y0=0,
                    y1=1,
                    fillcolor="rgba(214,39,40,0.12)",
                    line={"width": 0},
                    layer="below",
                )
    figure.add_trace(
        go.Bar(
            x=_times(with_bars["bucket_us"]),
            y=with_bars["trade_count"].to_numpy(),
            name="trades",
            width=width,
            marker={"color": "#1f77b4"},
            showlegend=False,
        ),
        row=2,
        col=1,
    )
    figure.add_trace(
        go.Bar(
            x=_times(with_bars["bucket_us"]),
            y=with_bars["duplicate_count"].to_numpy(),
            width=width,
            name="duplicates",
            marker={"color": "#ff7f0e"},
            showlegend=False,
        ),
        row=3,
        col=1,
    )
    figure.update_xaxes(range=_padded(shown["bucket_us"], step))
    figure.update_layout(
        title={"text": title},
        height=720,
        xaxis_rangeslider_visible=False,
        bargap=0,
        legend={"orientation": "h", "y": -0.06},
    )
    return Chart("bars", title.split("<br>")[0], figure, f"chart-bars-{index}")


def _candles(buckets: pl.DataFrame, name: str, **colours):
    return go.Candlestick(
        x=_times(buckets["bucket_us"]),
        open=buckets["open"].to_numpy(),
        high=buckets["high"].to_numpy(),
        low=buckets["low"].to_numpy(),
        close=buckets["close"].to_numpy(),
        name=name,
        **colours,
    )


def dead_letter_chart(dead: pl.DataFrame, interval_us: int, max_points: int) -> Chart:
    """Totals by reason, and over time by each record's event time; records without one (a line
    that did not parse) count in the totals only."""
    labelled = dead.with_columns(
        label=pl.when(pl.col("stage") == "sink").then(pl.format("{} (sink)", "reason")).otherwise(pl.col("reason"))
    )
    totals = labelled.group_by("label").len().sort("len", descending=True)
    timed = labelled.filter(pl.col("event_us").is_not_null())
    untimed = labelled.height - timed.height
    step = _step_of(timed["event_us"], interval_us, max_points) if timed.height else interval_us
    title = (
        f"dead letters by reason: {labelled.height:,}"
        + (f" — over time shown per {duration_text(step)}" if timed.height else "")
        + (f"<br><sup>{untimed:,} without an event time count in the totals only</sup>" if untimed else "")
    )
    rows = 2 if timed.height else 1
    figure = make_subplots(
        rows=rows,
        cols=1,
        vertical_spacing=0.15,
        row_heights=[0.35, 0.65][:rows] if rows == 2 else None,
        subplot_titles=("total by reason", f"by event time, per {duration_text(step)}")[:rows],
    )
    figure.add_trace(
        go.Bar(
            x=totals["label"].to_list(),
            y=totals["len"].to_numpy(),
            name="total",
            showlegend=False,
            marker={"color": "#7f7f7f"},
        ),
        row=1,
        col=1,
    )
    per_bucket = (
        timed.group_by(pl.col("label"), bucket_of(pl.col("event_us"), step).alias("bucket_us"))
        .len()
        .sort(["label", "bucket_us"])
    )
    for label in totals["label"].to_list():
        part = per_bucket.filter(pl.col("label") == label)
        if part.height:
            figure.add_trace(
                go.Bar(x=_times(part["bucket_us"]), y=part["len"].to_numpy(), name=label, width=step / 1000),
                row=2,
                col=1,
            )
    if timed.height:
        figure.update_xaxes(range=_padded(bucket_of(timed["event_us"], step), step), row=2, col=1)
    figure.update_layout(title={"text": title}, barmode="stack", height=560 if rows == 2 else 320, bargap=0)
    return Chart("dead-letters", title.split("<br>")[0], figure, "chart-dead-letters")


def late_chart(late_panes: pl.DataFrame, too_late: pl.DataFrame, interval_us: int, max_points: int) -> Chart:
    """LATE panes by their window's start, and too-late records (dead letters) by event time."""
    moments = pl.concat([late_panes["window_us"], too_late["event_us"].drop_nulls()])
    step = _step_of(moments, interval_us, max_points)
    figure = go.Figure()
    series = [
        (f"late panes ({table})", late_panes.filter(pl.col("table") == table)["window_us"])
        for table in sorted(set(late_panes["table"].to_list()))
    ]
    series.append(("too-late records (dead-lettered)", too_late["event_us"].drop_nulls()))
    for name, column in series:
        counts = (
            pl.DataFrame({"t": column})
            .group_by(bucket_of(pl.col("t"), step).alias("bucket_us"))
            .len()
            .sort("bucket_us")
        )
        if counts.height:
            figure.add_trace(
                go.Bar(x=_times(counts["bucket_us"]), y=counts["len"].to_numpy(), name=name, width=step / 1000)
            )
    title = (
        f"late data: {late_panes.height:,} late pane(s), {too_late.height:,} too-late record(s) — per "
        f"{duration_text(step)} (panes by window start, records by event time)"
    )
    figure.update_xaxes(range=_padded(bucket_of(moments, step), step))
    figure.update_layout(title={"text": title}, barmode="stack", height=420, bargap=0)
    return Chart("late", title, figure, "chart-late")


def consolidated_chart(base: str, quote: str, quality: pl.DataFrame, max_points: int, index: int) -> Chart:
    """Each venue's deviation from the reference price (mean per bucket when downsampled), and the
    windows it was excluded from, by reason."""

    parsed = parse_interval(quality["interval"][0])
    first, last = int(quality["window_us"].min()), int(quality["window_us"].max())
    step = display_step(last + parsed.micros - first, parsed.micros, max_points)
    per = duration_text(step)
    first_bucket = (first - parsed.offset_micros) // step * step + parsed.offset_micros
    every_bucket = pl.DataFrame({"bucket_us": pl.int_range(first_bucket, last + 1, step, dtype=pl.Int64, eager=True)})
    bucketed = quality.with_columns(bucket_us=bucket_of(pl.col("window_us"), step, parsed.offset_micros))
    excluded = bucketed.filter(pl.col("excluded"))
    title = (
        f"{base}/{quote} consolidated: venues' deviation from the reference price"
        f"{_shown_at(step, parsed.micros, 'windows')}<br><sup>{excluded.height:,} venue-window(s) excluded</sup>"
    )
    figure = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=[0.6, 0.4],
        subplot_titles=(
            "deviation_bps" + (f" (mean per {per})" if step != parsed.micros else ""),
            f"exclusions per {per}, by venue and reason",
        ),
    )
    for venue in sorted(set(bucketed["venue"].to_list())):
        # Every bucket is on the line's x: a window with no deviation breaks the line, never bridged.
        mean = every_bucket.join(
            bucketed.filter(pl.col("venue") == venue).group_by("bucket_us").agg(pl.col("deviation_bps").mean()),
            on="bucket_us",
            how="left",
        ).sort("bucket_us")
        figure.add_trace(
            go.Scatter(
                x=_times(mean["bucket_us"]),
                y=mean["deviation_bps"].to_numpy(),
                mode="lines",
                name=venue,
                connectgaps=False,
            ),
            row=1,
            col=1,
        )
    reasons = (
        excluded.with_columns(label=pl.format("{} · {}", "venue", pl.col("exclusion_reason").fill_null("unknown")))
        .group_by("label", "bucket_us")
        .len()
        .sort(["label", "bucket_us"])
    )
    for label in sorted(set(reasons["label"].to_list())):
        part = reasons.filter(pl.col("label") == label)
        figure.add_trace(
            go.Bar(x=_times(part["bucket_us"]), y=part["len"].to_numpy(), name=f"excluded: {label}", width=step / 1000),
            row=2,
            col=1,
        )
    figure.update_xaxes(range=_padded(every_bucket["bucket_us"], step))
    figure.update_layout(title={"text": title}, barmode="stack", height=620, bargap=0)
    return Chart("consolidated", title.split("<br>")[0], figure, f"chart-consolidated-{index}")


def _step_of(moments: pl.Series, interval_us: int, max_points: int) -> int:
    span = int(moments.max()) - int(moments.min()) + interval_us
    return display_step(span, interval_us, max_points)


def build_charts(data: OutputData, max_points: int, progress: Progress = lambda _: None) -> list[Chart]:
    charts = []
    interval_us = _run_interval_us(data)
    if data.bars is not None:
        series = data.bars.partition_by(["exchange", "symbol", "interval"], as_dict=True, maintain_order=True)
        for index, ((exchange, symbol, interval), bars) in enumerate(sorted(series.items())):
            progress(f"chart {exchange} {symbol} {interval}")
            charts.append(symbol_chart(exchange, symbol, interval, bars, max_points, index))
    if data.dead_letters is not None and data.dead_letters.height:
        progress("chart of dead letters")
        charts.append(dead_letter_chart(data.dead_letters, interval_us, max_points))
    late = (
        data.late_panes
        if data.late_panes is not None
        else pl.DataFrame(schema={"table": pl.String, "window_us": pl.Int64})
    )
    too_late = (
        data.dead_letters.filter(pl.col("reason") == "too_late")
        if data.dead_letters is not None
        else pl.DataFrame(schema={"reason": pl.String, "stage": pl.String, "event_us": pl.Int64})
    )
    if late.height or too_late["event_us"].drop_nulls().len():
        progress("chart of late data")
        charts.append(late_chart(late, too_late, interval_us, max_points))
    if data.quality is not None and data.quality.height:
        pairs = data.quality.partition_by(["base", "quote"], as_dict=True, maintain_order=True)
        for index, ((base, quote), rows) in enumerate(sorted(pairs.items())):
            progress(f"chart of consolidated {base}/{quote}")
            charts.append(consolidated_chart(base, quote, rows, max_points, index))
    return charts


def _run_interval_us(data: OutputData) -> int:
    candidates = [(data.summary or {}).get("interval")]
    if data.bars is not None and data.bars.height:
        candidates.append(data.bars["interval"][0])
    for text in candidates:
        try:
            return parse_interval(text).micros
        except (IntervalError, TypeError):
            continue
    return 60 * MICROS


# --- the page ------------------------------------------------------------------------------------

ACCOUNTING_ROWS = (
    ("records_in", "records read"),
    ("trades_in_final_bars", "in final bars"),
    ("dead_letter_rows_written", "dead-lettered (written)"),
    ("duplicates", "duplicates (absorbed)"),
    ("unique_trades", "unique trades"),
    ("dead_letters", "dead letters counted"),
    ("duplicates_in_final_bars", "duplicates in final bars"),
    ("bar_rows_written", "bar rows written"),
    ("filled_bars_written", "of which filled"),
    ("sink_rejections", "rows rejected by a sink"),
    ("sink_dead_letters_written", "sink rejections written as dead letters"),
    ("instrument_unknown_records", "records of unknown instruments"),
)


def accounting_html(summary: dict | None) -> str:
    """The identity ``records read = used + dead-lettered + duplicates`` and the summary's other
    figures, with whether it reconciles (recomputed here, and as the run found it)."""
    if summary is None:
        return f'<p class="warning" id="no-summary">No {SUMMARY_NAME}: no accounting to show.</p>'

    figures = {name: value for name, value in summary.items() if name in Accounting.__dataclass_fields__}
    accounting = Accounting.from_counters(figures)
    problems = list(dict.fromkeys([*summary.get("problems", []), *accounting.problems()]))
    reconciles = not problems and summary.get("reconciled", False)
    status_records = accounting.feed_status.get("unique_trades", 0) + accounting.feed_status.get("duplicates", 0)
    skipped = (
        accounting.accounted
        - accounting.trades_in_final_bars
        - accounting.dead_letter_rows_written
        - accounting.duplicates
        - status_records
    )
    balance = "=" if accounting.all_records_in == accounting.accounted else "≠"
    identity = (
        f"records read {accounting.all_records_in:,} {balance} "
        f"in final bars {accounting.trades_in_final_bars:,}"
        + (f" + left out by the table's definition {skipped:,}" if skipped else "")
        + f" + dead-lettered {accounting.dead_letter_rows_written:,} + duplicates {accounting.duplicates:,}"
        + (f" + status records {status_records:,}" if accounting.feed_status else "")
        + f" = {accounting.accounted:,}"
    )
    rows = "".join(
        f'<tr data-key="{key}"><th>{html.escape(label)}</th><td>{int(summary[key]):,}</td></tr>'
        for key, label in ACCOUNTING_ROWS
        if isinstance(summary.get(key), (int, float))
    )
    by_reason = "".join(
        f'<tr data-key="dead_letters_by_reason.{html.escape(reason)}"><th>dead letters: '
        f"{html.escape(reason)}</th><td>{int(count):,}</td></tr>"
        for reason, count in sorted(summary.get("dead_letters_by_reason", {}).items())
    )
    exclusions = "".join(
        f'<tr data-key="venue_exclusions.{html.escape(key)}"><th>excluded windows: '
        f"{html.escape(key.replace('|', ' · '))}</th><td>{int(count):,}</td></tr>"
        for key, count in sorted(summary.get("venue_exclusions", {}).items())
    )
    verdict = (
        f'<p id="reconciled" class="{"ok" if reconciles else "bad"}">'
        f"{'Reconciles' if reconciles else 'Does not reconcile'}: {html.escape(identity)}</p>"
    )
    listed = "".join(f"<li>{html.escape(problem)}</li>" for problem in problems)
    return (
        verdict
        + (f'<ul class="bad">{listed}</ul>' if listed else "")
        + f'<table id="accounting">{rows}{by_reason}{exclusions}</table>'
    )


PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1300px; color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0; } th, td { padding: 2px 12px; border-bottom: 1px solid #eee; }
th { text-align: left; font-weight: normal; color: #444; } td { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #1a7f37; font-weight: bold; } .bad { color: #c62828; font-weight: bold; } .warning { color: #b26a00; }
.chart { margin: 1em 0 2em; } section { margin-bottom: 2em; }
"""


def page_html(data: OutputData, charts: list[Chart]) -> str:
    summary = data.summary or {}
    source = summary.get("source")
    meta = " · ".join(
        html.escape(str(part))
        for part in (
            data.out,
            summary.get("command"),
            ", ".join(source) if isinstance(source, list) else source,
            f"interval {summary['interval']}" if "interval" in summary else None,
            f"report written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
        )
        if part
    )
    sections = {
        "bars": "Bars per symbol",
        "dead-letters": "Dead letters",
        "late": "Late and too-late data",
        "consolidated": "Consolidated bars: deviation and exclusions",
    }
    body = [
        f'<h1>cryptobeam report</h1><p class="meta">{meta}</p>',
        f'<section id="accounting-section"><h2>Accounting</h2>{accounting_html(data.summary)}</section>',
    ]
    notes = data.notes + [
        f"{table}: {count:,} final bars (information bars are not charted)"
        for table, count in data.other_tables.items()
    ]
    if data.dead_letters is None or not data.dead_letters.height:
        notes.append("no dead letters")
    if not any(chart.section == "late" for chart in charts):
        notes.append("no late panes and no too-late records")
    if data.bars is None:
        notes.append("no time bars (bars/)")
    if notes:
        body.append(
            '<section id="notes"><h2>Notes</h2><ul>'
            + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
            + "</ul></section>"
        )
    config = {"displaylogo": False, "responsive": True}

    def chart_html(chart) -> str:
        return pio.to_html(chart.figure, full_html=False, include_plotlyjs=False, div_id=chart.chart_id, config=config)

    for section, heading in sections.items():
        divs = [f'<div class="chart">{chart_html(chart)}</div>' for chart in charts if chart.section == section]
        if divs:
            body.append(f'<section id="{section}"><h2>{heading}</h2>{"".join(divs)}</section>')
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>cryptobeam report: {html.escape(data.out)}</title><style>{PAGE_STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>\n<body>{"".join(body)}</body></html>\n'
    )


def write_report(out: str, max_points: int = DEFAULT_MAX_POINTS, progress: Progress = lambda _: None) -> ReportResult:
    """Read ``out`` and write ``out/report.html``; returns what was written."""
    if max_points < 10:
        raise UserError("--max-points must be at least 10")
    started = time.monotonic()
    data = read_output(out, progress)
    charts = build_charts(data, max_points, progress)
    progress("writing report.html")
    page = page_html(data, charts).encode("utf-8")
    path = os.path.join(out, REPORT_NAME)
    write_atomically(page, path)
    return ReportResult(path=path, size=len(page), charts=charts, seconds=time.monotonic() - started)


def size_text(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size} B"


def describe(result: ReportResult) -> str:
    """One line: what was written."""
    by_section: dict[str, int] = {}
    for chart in result.charts:
        by_section[chart.section] = by_section.get(chart.section, 0) + 1
    counted = {"bars": ("symbol", "symbols"), "consolidated": ("consolidated pair", "consolidated pairs")}
    named = {"dead-letters": "dead letters", "late": "late data"}
    parts = [f"{n} {counted[s][n > 1]}" if s in counted else named[s] for s, n in by_section.items()]
    return (
        f"report written: {result.path} ({size_text(result.size)}, {len(result.charts)} chart(s)"
        + (f": {', '.join(parts)}" if parts else "")
        + f", {result.seconds:.1f} s)"
    )
