"""Dead letters are counted per reason and in total, as Beam counters, so the run summary can reconcile."""

from __future__ import annotations

import apache_beam as beam


def count_dead_letter(namespace: str, reason: str, n: int = 1) -> None:
    beam.metrics.Metrics.counter(namespace, "dead_letters").inc(n)
    beam.metrics.Metrics.counter(namespace, f"dead_letters.{reason}").inc(n)
