"""``cryptobeam iceberg compact``: rewrite Iceberg bar tables to the newest revision of each bar.

``add_iceberg_parser`` adds the sub-command to the ``cryptobeam`` parser; ``run_iceberg`` runs it.
"""
from __future__ import annotations

import argparse


def add_iceberg_parser(subparsers) -> argparse.ArgumentParser:
    iceberg = subparsers.add_parser("iceberg", help="maintain the Iceberg tables of --sink iceberg")
    return iceberg


def run_iceberg(args, console) -> int:
    raise NotImplementedError("cryptobeam iceberg is being built")
