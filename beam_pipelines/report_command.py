"""``cryptobeam report OUT``: one self-contained HTML page of an output directory's quality.

``add_report_parser`` adds the sub-command to the ``cryptobeam`` parser; ``run_report`` runs it.
"""
from __future__ import annotations

import argparse


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    report = subparsers.add_parser("report", help="write OUT/report.html: charts of bars, gaps, dead letters and "
                                                  "accounting, one self-contained page that opens offline")
    report.add_argument("out", help="output directory of a backfill or a stream")
    return report


def run_report(args, console) -> int:
    raise NotImplementedError("cryptobeam report is being built")
