"""A real standalone Flink session cluster on localhost, and the backfill run on it by FlinkRunner.

Nothing is skipped: without ``bash scripts/install_flink.sh`` these tests fail, saying so."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import runners.local_flink as local_flink
from beam_pipelines.backfill import build_backfill
from beam_pipelines.backfill_config import BackfillConfig
from io_connectors.bar_reader import final_bars
from io_connectors.files import match_inputs
from io_connectors.source_formats import SOURCES
from runners.local_flink import FlinkError, LocalFlink, flink_job_server_jar, flink_pipeline_args
from tests.support.commands import run_backfill
from tests.support.outputs import summary, without_panes
from tests.support.paths import BUNDLED, CLI, ROOT
from tests.support.streams import (
    assert_panes_reach_disk_live,
    backfill_bars,
    finish,
    new_topic,
    on_flink,
    replay,
    start_stream,
    wait_for_bar_files,
)
from transforms.bar_spec import BarSpec


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory):
    """One JobManager and one TaskManager for the whole test session; they die with it."""
    cluster = LocalFlink.start(tmp_path_factory.mktemp("flink"), die_with_parent=True)
    yield cluster
    cluster.stop()


def processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path`` (a cluster's work dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(path) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                if (entry / "stat").read_text().split(")")[-1].split()[0] != "Z":
                    found.append(entry.name)
        except OSError:
            pass
    return found


def test_cluster_has_a_taskmanager_with_slots(flink_cluster):
    overview = flink_cluster.status()
    assert overview["flink-version"].startswith(local_flink.FLINK_VERSION + ".")
    assert overview["taskmanagers"] == 1 and overview["slots-total"] == 2
    [taskmanager] = flink_cluster.taskmanagers()
    assert taskmanager["slotsNumber"] == 2


def test_python_executable_is_the_pipeline_venv(flink_cluster):
    config = flink_cluster.effective_config()
    assert config["python.executable"] == str(ROOT / ".venv" / "bin" / "python")
    assert os.access(config["python.executable"], os.X_OK)


def test_backfill_on_flink_equals_local_runner(flink_cluster, bundled_bars, tmp_path):
    """PROCESS workers, which the TaskManager starts; LOOPBACK ones (the default) run the pipeline
    API test below and every stream here."""
    out = tmp_path / "flink"
    result = run_backfill(
        "binance-aggtrades",
        BUNDLED,
        out,
        *on_flink(flink_cluster),
        "--environment",
        "PROCESS",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    bars = final_bars(str(out))
    assert len(bars) == len(bundled_bars) > 1000
    assert without_panes(bars) == without_panes(bundled_bars)
    jobs = flink_cluster.rest("/jobs/overview")["jobs"]
    assert jobs and all(job["state"] == "FINISHED" for job in jobs)  # it ran on the cluster, and ended


# LOOPBACK workers' gRPC threads raise "Multiplexer hanging up" when the TaskManager closes their
# data channel at the end of a job: Beam's shutdown noise, not a failure (a failure fails the run).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_pipeline_api_options_run_on_flink(flink_cluster, bundled_bars, tmp_path):
    """The same options from Python, for users who build the pipeline themselves."""
    out = tmp_path / "flink"
    config = BackfillConfig(
        source=SOURCES["binance-aggtrades"], files=match_inputs([BUNDLED]), spec=BarSpec.of("1m"), out=str(out)
    )
    with beam.Pipeline(options=PipelineOptions([], **flink_pipeline_args(flink_cluster))) as pipeline:
        build_backfill(pipeline, config)
    assert without_panes(final_bars(str(out))) == without_panes(bundled_bars)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_stream_on_flink_equals_local_backfill(flink_cluster, kafka_bootstrap, tmp_path):
    """Replay with disorder and late trades -> Kafka -> ``cryptobeam stream --runner flink --fill-gaps``,
    ending by itself once the topic has been idle (the read's end must finish the Flink job): the
    final bars are the local backfill's."""

    topic = new_topic(kafka_bootstrap, 2)
    replay(kafka_bootstrap, topic, "--disorder", "2s", "--late-fraction", "0.01", "--late-by", "5m", "--seed", "7")
    out = tmp_path / "stream"
    try:
        finish(
            start_stream(
                kafka_bootstrap,
                topic,
                out,
                *on_flink(flink_cluster),
                "--fill-gaps",
                *CONSOLIDATED,
                "--stop-when-idle",
                "10s",
            ),
            out,
        )
    finally:
        flink_cluster.cancel_running_jobs()  # Beam's cancel would not reach the cluster
    assert summary(out)["reconciled"]
    assert without_panes(final_bars(str(out))) == without_panes(
        backfill_bars(tmp_path, BUNDLED, "--fill-gaps", *CONSOLIDATED)
    )
    for table in ("bars_consolidated", "quality"):
        streamed = final_bars(str(out), table=table)
        assert streamed and without_panes(streamed) == without_panes(
            final_bars(str(tmp_path / "backfill"), table=table)
        )


CONSOLIDATED = ("--bars", "time:1m", "--bars", "consolidated:1m")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_panes_reach_disk_live_on_flink(flink_cluster, kafka_bootstrap, tmp_path):
    """ON_TIME panes while the trades still flow, not after the allowed lateness (10 m)."""

    def until_running(stream, timeout_s=180):
        deadline = time.monotonic() + timeout_s
        while not any(
            job["state"] == "RUNNING" and job["tasks"]["running"] + job["tasks"]["finished"] == job["tasks"]["total"]
            for job in flink_cluster.rest("/jobs/overview")["jobs"]
        ):
            assert stream.poll() is None and time.monotonic() < deadline, "the stream's Flink job never ran"
            time.sleep(0.5)

    try:
        assert_panes_reach_disk_live(
            kafka_bootstrap,
            tmp_path,
            *on_flink(flink_cluster),
            seconds=45,
            until_running=until_running,
        )
    finally:
        flink_cluster.cancel_running_jobs()


def test_stop_leaves_no_process_behind(tmp_path):
    work = tmp_path / "flink"
    started = LocalFlink.start(work, die_with_parent=True)
    assert set(started.alive()) == {"jobmanager", "taskmanager"}
    assert processes_using(work)
    LocalFlink.attach(work).stop()  # as a later command would: from the work dir alone
    assert started.alive() == [] and processes_using(work) == []
    assert started.status() is None
    with pytest.raises(FlinkError, match="no local Flink cluster"):
        LocalFlink.attach(work)


def test_missing_install_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(local_flink, "TOOLS", tmp_path / "nothing")
    with pytest.raises(FlinkError, match="scripts/install_flink.sh"):
        flink_job_server_jar()
    with pytest.raises(FlinkError, match="scripts/install_flink.sh"):
        LocalFlink.start(tmp_path / "flink")


def test_flink_up_status_down_from_the_command_line(tmp_path):
    work = tmp_path / "flink-cli"

    def flink(action):
        return subprocess.run([CLI, "flink", action, "--dir", str(work)], capture_output=True, text=True, timeout=300)

    up = flink("up")
    try:
        assert up.returncode == 0 and "--flink-master localhost:" in up.stdout, up.stdout + up.stderr
        status = flink("status")
        assert status.returncode == 0 and "1 TaskManager(s)" in status.stdout, status.stdout
    finally:
        assert flink("down").returncode == 0
    assert flink("status").returncode == 1 and processes_using(work) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_ctrl_c_stops_a_stream_on_flink_cleanly(flink_cluster, kafka_bootstrap, tmp_path):
    """An unbounded stream on the cluster, stopped by Ctrl-C: it drains, its Flink job finishes
    (not left running or restarting), and what it read is accounted for."""
    import signal

    topic = new_topic(kafka_bootstrap, 1)
    replay(kafka_bootstrap, topic)
    out = tmp_path / "stream"
    # EARLY panes show the stream is live, before any window has closed.
    stream = start_stream(kafka_bootstrap, topic, out, *on_flink(flink_cluster), "--early", "1s")
    try:
        wait_for_bar_files(stream, out, 180)
        stream.send_signal(signal.SIGINT)
        finish(stream, out)
    finally:
        flink_cluster.cancel_running_jobs()
    run = summary(out)
    assert run["reconciled"] and run["trades_in_final_bars"] == run["records_in"] > 0
    jobs = flink_cluster.rest("/jobs/overview")["jobs"]
    assert not {job["state"] for job in jobs} & {"RUNNING", "RESTARTING"}
    # No Flink checkpoints unless asked for: with 1 s ones, a stream like this lost every trade in 3 of 7 runs.
    newest = max(jobs, key=lambda job: job["start-time"])
    assert flink_cluster.rest(f"/jobs/{newest['jid']}/checkpoints")["counts"]["total"] == 0
