"""``cryptobeam report OUT``: one self-contained HTML page of an output directory's quality.

``add_report_parser`` adds the sub-command to the ``cryptobeam`` parser; ``run_report`` runs it.
The work (reading the output, building the charts and the page) is ``beam_pipelines.report``'s,
which is Beam-free, so this command never waits for Beam to import.
"""

from __future__ import annotations

import argparse

from beam_pipelines.cli_common import UserError
from io_connectors.paths import is_remote

DEFAULT_MAX_POINTS = 3000
"""Most buckets a chart shows: a month of 1m bars is drawn at 15m. Here, not in ``report``, so that
building the command line never imports polars and pyarrow."""


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    report = subparsers.add_parser(
        "report",
        help="write OUT/report.html: charts of bars, gaps, dead letters and "
        "accounting, one self-contained page that opens offline",
    )
    report.add_argument("out", help="output directory of a backfill or a stream")
    report.add_argument(
        "--max-points",
        type=int,
        default=DEFAULT_MAX_POINTS,
        help="most buckets a chart shows; longer series are downsampled to a coarser step, which "
        f"the chart's title names (default {DEFAULT_MAX_POINTS:,}: a month of 1m bars at 15m)",
    )
    report.add_argument("--no-progress", action="store_true", help="do not show progress")
    return report


def run_report(args, console) -> int:
    # polars, Arrow and plotly: the command line imports this module at start
    from beam_pipelines.report import describe, write_report

    if is_remote(args.out):
        raise UserError(f"report reads a local directory; copy {args.out} here first")
    out = args.out.rstrip("/") or "/"
    if args.no_progress or not console.is_terminal:
        result = write_report(out, args.max_points)
    else:
        with console.status("report: starting") as status:
            result = write_report(out, args.max_points, progress=lambda step: status.update(f"report: {step}"))
    console.print(describe(result), highlight=False, soft_wrap=True)
    return 0
