import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HYPOTHESIS_PROFILE", "default")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])




def pytest_terminal_summary(terminalreporter):
    fuzz = sys.modules.get("tests.test_fuzz")
    if fuzz and fuzz.LINES_RUN["examples"]:
        terminalreporter.write_line(f"fuzz: {fuzz.LINES_RUN['examples']} examples, {fuzz.LINES_RUN['lines']} hostile "
                                    "lines and rows through the whole pipeline, all reconciled")
        by_format = fuzz.LINES_RUN.get("by_format")
        if by_format:
            terminalreporter.write_line("fuzz, hostile records per input format: " + ", ".join(
                f"{name} {count:,}" for name, count in sorted(by_format.items())))


@pytest.fixture(scope="session")
def bigquery_endpoint(tmp_path_factory):
    """A real BigQuery emulator on a free localhost port, for the whole test session."""
    from tests.bigquery_emulator import BigQueryEmulator
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
