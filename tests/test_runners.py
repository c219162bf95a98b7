"""Runner profiles: validated before anything starts, never Docker for Python workers; the Dataflow
plan built offline; a real portable job endpoint running the unchanged backfill and stream."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from io_connectors.bar_reader import final_bars
from runners.ports import free_port
from runners.profiles import RunnerError, profile_for
from tests.support.commands import cli, run_backfill
from tests.support.outputs import summary, without_panes
from tests.support.paths import BUNDLED, ROOT
from tests.support.streams import finish, new_topic, replay, start_stream


@pytest.mark.parametrize(
    "name, flags, message",
    [
        ("flink", {}, "--flink-master"),
        ("flink", {"flink_master": "localhost:8081", "flink_version": "1.17"}, "not supported by apache-beam 2.77"),
        ("flink", {"flink_master": "localhost:8081", "flink_job_server_jar": "/nonexistent.jar"}, "install_flink.sh"),
        ("dataflow", {"project": "p", "region": "r"}, "--temp-location"),
        ("dataflow", {"project": "p", "region": "r", "temp_location": "/tmp/x"}, "gs://"),
        ("portable", {}, "--job-endpoint"),
        ("portable", {"job_endpoint": "localhost:1", "environment": "DOCKER"}, "never DOCKER"),
        ("portable", {"job_endpoint": "localhost:1", "environment": "EXTERNAL"}, "--environment-config"),
        ("prism", {"environment": "PROCESS"}, "not prism"),
        ("spark", {}, "unknown runner"),
    ],
)
def test_profiles_are_checked_before_anything_starts(name, flags, message):
    with pytest.raises(RunnerError, match=message):
        profile_for(name, **flags)


def test_a_stream_never_gets_a_batch_runner():
    with pytest.raises(RunnerError, match="streaming semantics"):
        profile_for("direct", streaming=True)


def test_profile_options_are_runnable_and_docker_free(tmp_path):
    jar = tmp_path / "beam-runners-flink-1.19-job-server-2.62.0.jar"
    jar.write_bytes(b"")
    flink = profile_for(
        "flink", streaming=True, flink_master="localhost:8081", flink_job_server_jar=str(jar), parallelism=4
    ).option_values(streaming=True)
    assert flink == {
        "flink_master": "localhost:8081",
        "flink_version": "1.19",
        "flink_job_server_jar": str(jar),
        "parallelism": 4,
        "environment_type": "LOOPBACK",
    }
    # Flink checkpoints only when asked for: an early one lost every trade of a stream on this job server.
    checkpointed = profile_for(
        "flink",
        streaming=True,
        flink_master="localhost:8081",
        flink_job_server_jar=str(jar),
        checkpointing_interval_ms=30_000,
    ).option_values(streaming=True)
    assert checkpointed["checkpointing_interval"] == 30_000 and checkpointed["shutdown_sources_after_idle_ms"] == 1000
    dataflow = profile_for("dataflow", project="p", region="europe-west1", temp_location="gs://b/tmp").option_values(
        True
    )
    assert dataflow["setup_file"] == str(ROOT / "setup.py") and dataflow["staging_location"] == "gs://b/tmp/staging"
    assert dataflow["enable_streaming_engine"] is True and "environment_type" not in dataflow
    external = profile_for(
        "portable", job_endpoint="jobs:8099", environment="external", environment_config="localhost:50000"
    ).option_values()
    assert external == {
        "job_endpoint": "jobs:8099",
        "environment_type": "EXTERNAL",
        "environment_config": "localhost:50000",
    }
    for profile in (flink, dataflow, external):
        assert "DOCKER" not in str(profile.get("environment_type", ""))


def _plan(tmp_path, job, *args):
    plan = tmp_path / f"plan-{job}"
    result = cli(
        "dataflow",
        "plan",
        job,
        *args,
        "--project",
        "demo-project",
        "--region",
        "europe-west1",
        "--temp-location",
        "gs://demo-bucket/tmp",
        "--plan-out",
        str(plan),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return plan, (plan / "plan.txt").read_text()


def test_dataflow_plan_of_the_backfill_is_built_offline(tmp_path):
    from apache_beam.portability.api import beam_runner_api_pb2

    plan, text = _plan(
        tmp_path, "backfill", "--source", "binance-aggtrades", "--input", BUNDLED, "--out", "gs://demo-bucket/out"
    )
    proto = beam_runner_api_pb2.Pipeline.FromString((plan / "pipeline.pb").read_bytes())
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {
        "ReadTradeFiles",
        "TradesToBars/Parse",
        "TradesToBars/Dedupe",
        "TradesToBars/Bars/MergePartials",
        "FinalizeBoundedBars",
        "WriteBars",
        "WriteDeadLetters",
    } <= names
    assert (
        "TradesToBars/Bars/MergePartials  [beam:transform:combine_per_key:v1]  "
        "-> kv<tuple<string_utf8, string_utf8, varint>" in text
    )
    assert f"setup_file = {ROOT / 'setup.py'}" in text and "project = demo-project" in text
    assert '"type": "JOB_TYPE_BATCH"' in (plan / "job.json").read_text()


def test_dataflow_plan_of_the_stream_needs_no_kafka(tmp_path):
    plan, text = _plan(
        tmp_path,
        "stream",
        "--kafka",
        "kafka.invalid:9092",
        "--topic",
        "trades",
        "--early",
        "5s",
        "--out",
        "gs://demo-bucket/stream",
    )
    for transform in (
        "ReadKafka/Partitions",
        "ReadKafka/ReadPartitions",
        "TradesToBars/RouteTooLateAndStampEventTime",
        "WriteBars/FilePanes",
        "WriteBarsKafka",
        "CommitOffsets/Commit",
    ):
        assert f"  {transform}  [" in text, transform
    assert "streaming = True" in text and "enable_streaming_engine" in text
    assert '"type": "JOB_TYPE_STREAMING"' in (plan / "job.json").read_text()


def _serve(command: list[str], port: int):
    """Start a job service in its own process; yield its endpoint once it listens, stop it after."""
    service = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        assert service.poll() is None and time.monotonic() < deadline, f"{command[0]} did not start"
        time.sleep(0.2)
    yield f"localhost:{port}"
    service.terminate()
    service.wait(30)


@pytest.fixture
def python_job_service():
    """Beam's own Python job service in a separate process: a real portable job endpoint."""
    port = free_port()
    yield from _serve(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", "--port", str(port)], port
    )


def test_backfill_on_a_portable_job_endpoint_equals_the_local_runner(python_job_service, bundled_bars, tmp_path):
    out = tmp_path / "portable"
    result = run_backfill(
        "binance-aggtrades", BUNDLED, out, "--runner", "portable", "--job-endpoint", python_job_service
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert without_panes(final_bars(str(out))) == without_panes(bundled_bars)


@pytest.fixture
def prism_job_server():
    """Prism started as a job server: the portable runner then drives a real streaming runner."""
    from runners.profiles import prism_binary

    port = free_port()
    yield from _serve([prism_binary(), "--job_port", str(port), "--serve_http=false"], port)


def test_stream_on_a_portable_job_endpoint(kafka_bootstrap, prism_job_server, bundled_bars, tmp_path):
    topic = new_topic(kafka_bootstrap, 1)
    replay(kafka_bootstrap, topic)
    out = tmp_path / "stream"
    portable = ("--runner", "portable", "--job-endpoint", prism_job_server)
    finish(start_stream(kafka_bootstrap, topic, out, *portable, "--stop-when-idle", "4s"), out)
    assert summary(out)["reconciled"]
    assert without_panes(final_bars(str(out))) == without_panes(bundled_bars)


def test_flex_template_launcher_builds_the_stream_from_template_parameters(tmp_path):
    """Dataflow's invocation of the launcher, with Beam's dry run instead of a submission."""
    from runners.dataflow import launcher

    parameters = {
        "kafka": "kafka.invalid:9092",
        "out": "gs://demo-bucket/bars",
        "interval": "5m",
        "early": "10s",
        "allowed_lateness": "15m",
        "fill_gaps": "true",
        "bars_topic": "bars_5m",
    }
    assert set(parameters) <= launcher.template_parameters()
    argv = [f"--{k}={v}" for k, v in parameters.items()] + [
        "--runner=DataflowRunner",
        "--project=demo-project",
        "--region=europe-west1",
        "--temp_location=gs://demo-bucket/tmp",
        "--dry_run=True",
        "--no_auth",
        "--sdk_location=container",
    ]
    ours, beam_options = launcher.split_arguments(argv)
    assert "--allowed-lateness=15m" in ours and "--fill-gaps" in ours and "--runner=DataflowRunner" in beam_options
    pipeline = launcher.build(argv)
    result = pipeline.run()
    proto = result.job.proto_pipeline
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"ReadKafka/ReadPartitions", "TradesToBars/FillGaps", "WriteBarsKafka", "CommitOffsets/Commit"} <= names
    assert '"type": "JOB_TYPE_STREAMING"' in result.job.json()
