"""A run's Beam metrics read back: each counter summed over the steps that count it, committed
values where the runner has them. The run's accounting (``beam_pipelines.accounting``) and the
stream's Prometheus endpoint (``io_connectors.prometheus_metrics``) read them alike.

The metrics only a stream's endpoint reads are named here too: its pipeline counts them
(``beam_pipelines.outputs``) without importing the endpoint's Prometheus client.

Beam-free (the namespace is picked here rather than by Beam's ``MetricsFilter``), so the command
line imports the accounting before Beam loads.
"""

from __future__ import annotations

NAMESPACE = "cryptobeam"

PANE_LATENCY_BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
"""Upper bounds of the event-to-pane latency buckets, seconds (``+Inf`` follows)."""
PANE_LATENCY_BUCKET = "pane_latency_bucket."  # pane_latency_bucket.<table>|<upper bound or +Inf>
PANE_LATENCY_SUM_MS = "pane_latency_sum_ms."  # pane_latency_sum_ms.<table>
WATERMARK_PASSED_US = "watermark_passed_window_end_us"  # a distribution: its max is the bound


def pane_latency_counter(table: str, bound: float | None) -> str:
    """The Beam counter of one latency bucket of one table (non-cumulative); ``None`` is ``+Inf``."""
    return f"{PANE_LATENCY_BUCKET}{table}|{'+Inf' if bound is None else f'{bound:g}'}"


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
