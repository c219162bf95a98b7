import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HYPOTHESIS_PROFILE", "default")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# The shared helpers assert too; rewritten like the test modules', their failures explain themselves.
pytest.register_assert_rewrite("tests.support")

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


SERVICE_FIXTURES = {
    "kafka_bootstrap": "kafka",
    "bigquery_endpoint": "bigquery",
    "flink_cluster": "flink",
    "restart_cluster": "flink",
    "prism_job_server": "prism",
    "python_job_service": "prism",
    "browser": "browser",
    "anvil_node": "ethereum",
    "new_anvil": "ethereum",
}
"""A test that takes one of these fixtures needs that service running (its marker)."""
SERVICE_MODULES = {
    "test_flink_cluster": "flink",
    "test_flink_restarts": "flink",
    "test_kafka": "kafka",  # brokers of its own: started, stopped and restarted by the tests
    "test_stream_faults": "kafka",
    "test_metrics": "prometheus",
    "test_monitoring": "prometheus",
}
"""Modules whose every test needs the service, whatever fixtures it takes."""
STREAM_MODULES = (
    "test_stream",
    "test_consolidated_runs",
    "test_iceberg",
    "test_metrics",
    "test_chain_stream",
    "test_chain_end_to_end",
)
"""Modules whose Kafka tests run their streams on Prism."""
PIPELINE_FIXTURES = {
    "bundled_bars",  # below
    "bundled_run",  # test_hostile_outputs
    "information_only",  # test_bars_option
    "whole_backfill",  # test_consolidated_runs
    "single_runs",  # test_multi_source
    "multi_run",  # test_multi_source
    "backfilled",  # test_iceberg
    "filled_out",  # test_report
    "gappy_out",  # test_report
    "consolidated_out",  # test_report
    "sliced_run",  # test_time_slices
}
"""Fixtures that run a whole pipeline: a test that takes one is a ``pipeline`` test."""
PIPELINE_MODULES = {
    "test_chunked",
    "test_fuzz",
    "test_information_bar_panes",
    "test_chain_backfill",
    "test_chain_blocks_backfill",
}
"""Modules whose every test runs a whole pipeline."""


def pytest_collection_modifyitems(config, items):
    """Marks each test with the services it needs, ``pipeline`` if it runs a whole pipeline (from the
    fixtures and modules above, or its own ``pytest.mark.pipeline``), and every such test
    ``integration``, so that ``pytest -m "not integration"`` runs the unit layer alone and ``-m kafka``
    (say) one service's tests."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        services = {SERVICE_FIXTURES[name] for name in fixtures if name in SERVICE_FIXTURES}
        module = item.module.__name__.rpartition(".")[2] if getattr(item, "module", None) else ""
        if module in SERVICE_MODULES:
            services.add(SERVICE_MODULES[module])
        if "kafka" in services and module.startswith(STREAM_MODULES):
            services.add("prism")
        for service in sorted(services):
            item.add_marker(getattr(pytest.mark, service))
        pipeline = item.get_closest_marker("pipeline") is not None
        if not pipeline and (module in PIPELINE_MODULES or fixtures & PIPELINE_FIXTURES):
            item.add_marker(pytest.mark.pipeline)
            pipeline = True
        if services or pipeline:
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter):
    from tests.support.fuzz_tally import LINES_RUN

    if LINES_RUN["examples"]:
        terminalreporter.write_line(
            f"fuzz: {LINES_RUN['examples']} examples, {LINES_RUN['lines']} hostile "
            "lines and rows through the whole pipeline, all reconciled"
        )
        by_format = LINES_RUN.get("by_format")
        if by_format:
            terminalreporter.write_line(
                "fuzz, hostile records per input format: "
                + ", ".join(f"{name} {count:,}" for name, count in sorted(by_format.items()))
            )


@pytest.fixture(scope="session")
def bigquery_endpoint(tmp_path_factory):
    """A real BigQuery emulator on a free localhost port, for the whole test session."""
    from tests.support.bigquery_emulator import BigQueryEmulator

    emulator = BigQueryEmulator(tmp_path_factory.mktemp("bigquery"))
    yield emulator.endpoint
    emulator.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    """A real single-node Kafka broker (KRaft) on a free localhost port, for the whole test session."""
    from runners.local_kafka import LocalKafka

    broker = LocalKafka.start(tmp_path_factory.mktemp("kafka"))
    yield broker.bootstrap
    broker.stop()


@pytest.fixture(scope="session")
def bundled_bars(tmp_path_factory) -> list[dict]:
    """Final bars of a local backfill of the bundled data, default options: what a run of the same
    trades on another runner must equal. Shared, read-only."""
    from tests.support.streams import backfill_bars

    return backfill_bars(tmp_path_factory.mktemp("bundled"))


@pytest.fixture
def background():
    """Local fake exchanges serving in a background thread, closed after the test."""
    from tests.support.fake_exchanges import Background

    servers = Background()
    yield servers
    servers.close()
