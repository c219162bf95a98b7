"""Iceberg: every table of bars and the run's dead letters as Iceberg tables in namespace
``market`` (``market.bars``, ``market.bars_ticks``, ``market.dead_letters``, ...), through any
catalog pyiceberg reaches: a catalog URI (``sqlite:///out/catalog.db``, ``postgresql://...``,
``http://rest-catalog``, ``thrift://hive``) plus ``--iceberg-property KEY=VALUE`` for the rest
(``type=glue``, credentials, ``s3.endpoint``...), so a new catalog needs no code.

The catalog is opened, and every existing table checked against its schema, when the options
are read: an unreachable or corrupt catalog, or a table whose schema the ``.avsc`` files cannot
write, is one line and exit 2 before any pipeline runs. Writing is ``io_connectors.iceberg_sink``;
the tables themselves, ``io_connectors.iceberg_tables``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from io_connectors.sinks.base import Sink, SinkOptionError, SinkWrites

OPTIONS = ("--iceberg-catalog", "--iceberg-warehouse", "--iceberg-property")


@dataclass(frozen=True)
class IcebergTarget:
    catalog: str
    """The catalog's URI, local paths made absolute (chunk workers and runners' workers open it too)."""
    warehouse: str | None = None
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def shown(self) -> str:
        """The catalog's URI without a password, for messages and manifests."""
        return re.sub(r"^([a-z0-9+.-]+://[^/@:]*):[^/@]*@", r"\1:***@", self.catalog, flags=re.IGNORECASE)

    def catalog_properties(self) -> dict[str, str]:
        """What pyiceberg's ``load_catalog`` is given: the URI, the warehouse and the user's properties."""
        properties = {"uri": self.catalog}
        if self.warehouse:
            properties["warehouse"] = self.warehouse
        return {**properties, **dict(self.properties)}


def absolute_catalog_uri(uri: str) -> str:
    """A SQLite catalog's file as an absolute path, its directory created (SQLite creates only the file)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix) :] in ("", ":memory:"):
        return uri
    path = os.path.abspath(uri[len(prefix) :])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return prefix + path


def absolute_warehouse(warehouse: str | None) -> str | None:
    """A local warehouse directory as a ``file://`` URI; object-store URIs as given."""
    if not warehouse or "://" in warehouse:
        return warehouse
    path = os.path.abspath(warehouse)
    os.makedirs(path, exist_ok=True)
    return "file://" + path


def parse_properties(texts: list[str] | None) -> tuple[tuple[str, str], ...]:
    pairs = []
    for text in texts or []:
        key, equals, value = text.partition("=")
        if not equals or not key.strip():
            raise SinkOptionError(f"bad --iceberg-property {text!r}: use KEY=VALUE, e.g. type=rest")
        pairs.append((key.strip(), value))
    return tuple(pairs)


class IcebergSink(Sink):
    name = "iceberg"
    description = (
        "Iceberg tables in namespace market, through any pyiceberg catalog: market.bars as revision rows "
        "(one per pane; bars_latest is a documented query), every other table in its own "
        "(market.bars_ticks, market.bars_consolidated, market.quality and the like) and market.dead_letters"
    )

    def add_options(self, command, streaming: bool) -> None:
        group = command.add_argument_group("iceberg (--sink iceberg; see docs/iceberg.md)")
        add_catalog_options(group)

    def target_from_args(self, args, chosen: bool, streaming: bool) -> IcebergTarget | None:
        given = args.iceberg_catalog or args.iceberg_warehouse or args.iceberg_property
        if not chosen:
            if given:
                raise SinkOptionError(
                    "--iceberg-catalog, --iceberg-warehouse and --iceberg-property go with --sink iceberg"
                )
            return None
        target = target_of(args)
        # pyiceberg loads only for a run that asks for the sink
        from io_connectors.iceberg_tables import IcebergError, check_catalog

        try:
            check_catalog(target)
        except IcebergError as error:
            raise SinkOptionError(str(error)) from None
        return target

    def settings(self, target: IcebergTarget | None) -> dict:
        return {"iceberg_catalog": target.shown, "iceberg_warehouse": target.warehouse} if target else {}

    def write(self, bars, target: IcebergTarget) -> SinkWrites:
        # Beam and pyiceberg load when a pipeline is built, not when the command line offers sinks
        from io_connectors.iceberg_sink import write_to_iceberg

        return write_to_iceberg(bars, target)


def add_catalog_options(group) -> None:
    """The catalog options: the sink's (backfill, stream) and ``cryptobeam iceberg``'s."""
    group.add_argument(
        "--iceberg-catalog",
        metavar="URI",
        help="Iceberg catalog URI for --sink iceberg, e.g. sqlite:///out/catalog.db, "
        "postgresql://user@host/db, http://rest-catalog:8181",
    )
    group.add_argument(
        "--iceberg-warehouse",
        metavar="DIR",
        help="where new tables' files go, e.g. out/warehouse or s3://bucket/warehouse",
    )
    group.add_argument(
        "--iceberg-property",
        action="append",
        metavar="KEY=VALUE",
        help="any other pyiceberg catalog property, e.g. type=glue or s3.endpoint=... (repeatable)",
    )


def target_of(args) -> IcebergTarget:
    """The catalog the options name; SinkOptionError when they name none."""
    if not args.iceberg_catalog:
        raise SinkOptionError(
            "--sink iceberg needs --iceberg-catalog URI, e.g. sqlite:///out/catalog.db "
            "with --iceberg-warehouse out/warehouse"
        )
    properties = parse_properties(args.iceberg_property)
    return IcebergTarget(
        absolute_catalog_uri(args.iceberg_catalog), absolute_warehouse(args.iceberg_warehouse), properties
    )
