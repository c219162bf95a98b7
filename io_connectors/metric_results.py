"""A run's Beam metrics read back: each counter summed over the steps that count it, committed
values where the runner has them. The run's accounting (``beam_pipelines.accounting``) and the
stream's Prometheus endpoint (``io_connectors.prometheus_metrics``) read them alike.

Beam-free (the namespace is picked here rather than by Beam's ``MetricsFilter``), so the command
line imports the accounting before Beam loads.
"""

from __future__ import annotations

NAMESPACE = "cryptobeam"


def metrics_in(metric_results, namespace: str = NAMESPACE) -> dict[str, list]:
    """Beam's ``MetricResults`` of one namespace, by kind (``counters``, ``distributions``, ...)."""
    found = metric_results.query()
    return {kind: [m for m in results if m.key.metric.namespace == namespace] for kind, results in found.items()}


def value_of(metric):
    """A metric's committed value where the runner has one, else its attempted value."""
    return metric.committed if metric.committed is not None else metric.attempted


def counter_totals(counters) -> dict[str, int]:
    """Each counter summed over the steps that count it."""
    totals: dict[str, int] = {}
    for counter in counters:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value_of(counter) or 0)
    return totals
