"""Where bars go: every sink, by name. Adding one is a module here (a ``Sink``, see ``base``)
and a line in ``SINKS``; the command line's ``--sink``, a backfill's chunk manifests, the
stream and the seam fill all take their sinks from this registry.

Beam-free, like ``io_connectors.source_formats``: the command line offers and checks sinks
without importing Beam or a sink's client library.
"""

from __future__ import annotations

from io_connectors.sinks.avro import AvroSink
from io_connectors.sinks.base import ALWAYS, CHOSEN, NOT_OFFERED, Sink, SinkOptionError, SinkTarget, SinkWrites
from io_connectors.sinks.bigquery import BigQuerySink
from io_connectors.sinks.iceberg import IcebergSink
from io_connectors.sinks.kafka import KafkaSink
from io_connectors.sinks.parquet import ParquetSink

SINKS: dict[str, Sink] = {
    s.name: s
    for s in [
        ParquetSink(),
        AvroSink(),
        BigQuerySink(),
        KafkaSink(),
        IcebergSink(),
    ]
}

PARQUET_ONLY = (SinkTarget("parquet"),)
"""The sinks of a run that asks for no other."""


def offered(streaming: bool) -> dict[str, Sink]:
    """The sinks a backfill (or a stream) can write to, in registry order."""
    return {name: sink for name, sink in SINKS.items() if sink.use(streaming) != NOT_OFFERED}


def sink_targets(args, streaming: bool) -> tuple[SinkTarget, ...]:
    """The sinks the parsed options ask for (those always written, and ``--sink`` ones), each with
    its target; SinkOptionError, one line, for an unknown sink or a sink's bad options."""
    available = offered(streaming)
    unknown = sorted(set(args.sink) - set(available))
    if unknown:
        raise SinkOptionError(f"unknown --sink {unknown[0]!r}; available: {', '.join(available)}")
    targets = []
    for sink in available.values():
        chosen = sink.use(streaming) == ALWAYS or sink.name in args.sink
        target = sink.target_from_args(args, chosen, streaming)
        if chosen:
            targets.append(SinkTarget(sink.name, target))
    return tuple(targets)


def recorded_settings(targets: tuple[SinkTarget, ...]) -> dict:
    """What a backfill's chunk manifest records of its sinks: their names, sorted, and each
    backfill sink's own settings."""
    chosen = dict(targets)
    settings = {"sinks": sorted(chosen)}
    for sink in offered(streaming=False).values():
        settings.update(sink.settings(chosen.get(sink.name)))
    return settings


__all__ = [
    "ALWAYS",
    "CHOSEN",
    "NOT_OFFERED",
    "PARQUET_ONLY",
    "SINKS",
    "Sink",
    "SinkOptionError",
    "SinkTarget",
    "SinkWrites",
    "offered",
    "recorded_settings",
    "sink_targets",
]
