"""``cryptobeam iceberg compact``: rewrite Iceberg bar tables to the newest revision of each bar.

A stream appends every pane of a bar as a row (``--sink iceberg``); compaction keeps only the
newest pane of each bar (``io_connectors.iceberg_tables.newest_revisions``, the same rows the
``bars_latest`` query of docs/iceberg.md returns), rewriting just the partitions that hold older
panes, in one atomic commit per table. Earlier snapshots keep every revision for time travel
until they are expired. It takes the sink's catalog options.

``add_iceberg_parser`` adds the sub-command to the ``cryptobeam`` parser; ``run_iceberg`` runs it.
"""

from __future__ import annotations

import argparse

from beam_pipelines.cli_common import UserError
from io_connectors.sinks import SinkOptionError
from io_connectors.sinks.iceberg import add_catalog_options, target_of


def add_iceberg_parser(subparsers) -> argparse.ArgumentParser:
    iceberg = subparsers.add_parser("iceberg", help="maintain the Iceberg tables of --sink iceberg")
    actions = iceberg.add_subparsers(dest="iceberg_command", parser_class=type(iceberg), required=True)
    compact = actions.add_parser(
        "compact", help="rewrite bar tables to the newest revision (pane) of each bar, one atomic commit per table"
    )
    add_catalog_options(compact)
    compact.add_argument(
        "--table",
        action="append",
        metavar="NAME",
        help="a table of namespace market to compact, e.g. bars (repeatable; default: every bar table)",
    )
    return iceberg


def run_iceberg(args, console) -> int:
    # pyiceberg and Arrow: the command line imports this module at start
    from io_connectors.iceberg_tables import IcebergError, bar_tables_in, compact, identifier, open_catalog

    try:
        catalog = open_catalog(target_of(args))
        present = bar_tables_in(catalog)
        unknown = sorted(set(args.table or []) - set(present))
        if unknown:
            raise UserError(f"no Iceberg bar table {identifier(unknown[0])}; there are: {', '.join(present) or 'none'}")
        for table in args.table or present:
            before, after = compact(catalog, table)
            console.print(f"{identifier(table)}: {before:,} rows -> {after:,} (newest revision of each bar)")
    except (IcebergError, SinkOptionError) as error:
        raise UserError(str(error).replace("--sink iceberg needs", "cryptobeam iceberg compact needs")) from None
    return 0
