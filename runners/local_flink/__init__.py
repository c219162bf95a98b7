"""A real standalone Flink session cluster (one JobManager, one TaskManager) on localhost.

Built from the Flink distribution that the ``apache-flink`` wheel ships inside ``pyflink/``, Beam's
Flink job server jar and Beam's Python boot program, all installed by ``scripts/install_flink.sh``
into ``.tools/flink`` (the wheel pins an old apache-beam, so it lives in its own virtualenv, never
in ``.venv``). Each cluster gets free ports and its own work directory holding its config, logs and
pid files. Used by the test suite; ``flink_pipeline_args`` gives the FlinkRunner options that run
this project's pipelines on it (or on any Flink 1.19 session cluster).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from runners.ports import free_port
from runners.profiles import profile_for

ROOT = Path(__file__).resolve().parent.parent.parent
TOOLS = ROOT / ".tools" / "flink"
FLINK_VERSION = "1.19"  # pass as --flink_version: the newest Flink whose Beam runner Maven Central has here
BEAM_RUNNER_VERSION = "2.62.0"  # the Java side; see runners/local_flink/pom.xml for why not 2.77
PIPELINE_PYTHON = ROOT / ".venv" / "bin" / "python"  # not resolved: the venv's symlink must stay the venv's
BOOT = TOOLS / "bin" / "beam-python-boot"  # Beam's Python SDK boot program, for PROCESS workers
SERVICES = ("jobmanager", "taskmanager")
INSTALL_HINT = "run `bash scripts/install_flink.sh`"


class FlinkError(RuntimeError):
    """The local cluster cannot be started or reached, or Flink is not installed."""


def flink_home() -> Path:
    """The Flink distribution inside the tools venv's ``pyflink`` package (bin/, lib/, conf/)."""
    try:
        home = Path((TOOLS / "flink_home").read_text().strip())
    except OSError:
        raise FlinkError(f"Flink is not installed: {INSTALL_HINT}") from None
    if not (home / "bin" / "jobmanager.sh").is_file():
        raise FlinkError(f"no Flink distribution at {home}: {INSTALL_HINT}")
    return home


def flink_job_server_jar() -> str:
    """Beam's Flink job server jar, passed as ``--flink_job_server_jar``: Beam would otherwise try
    to download it at run time, which cannot work here."""
    jar = TOOLS / "jars" / f"beam-runners-flink-{FLINK_VERSION}-job-server-{BEAM_RUNNER_VERSION}.jar"
    if not jar.is_file():
        raise FlinkError(f"Beam's Flink job server jar is missing ({jar}): {INSTALL_HINT}")
    return str(jar)


def flink_pipeline_args(
    cluster: "LocalFlink | str",
    streaming: bool = False,
    parallelism: int = 2,
    checkpointing_interval_ms: int | None = None,
    environment: str = "LOOPBACK",
) -> dict:
    """FlinkRunner options for a session cluster (a ``LocalFlink`` or its REST ``host:port``): the
    ``flink`` runner profile's options, the same ones ``--runner flink`` gives (``runners.profiles``
    documents them)."""
    master = cluster if isinstance(cluster, str) else cluster.flink_master
    profile = profile_for(
        "flink",
        streaming=streaming,
        flink_master=master,
        flink_version=FLINK_VERSION,
        flink_job_server_jar=flink_job_server_jar(),
        parallelism=parallelism,
        checkpointing_interval_ms=checkpointing_interval_ms,
        environment=environment,
    )
    return {"runner": "FlinkRunner", "streaming": streaming, **profile.option_values(streaming)}


TERMINAL_JOB_STATES = ("FINISHED", "CANCELED", "FAILED")


def _rest_url(flink_master: str) -> str:
    return flink_master if flink_master.startswith(("http://", "https://")) else f"http://{flink_master}"


def _rest(flink_master: str, path: str, method: str = "GET", timeout: float = 5):
    request = urllib.request.Request(f"{_rest_url(flink_master)}{path}", method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


def live_jobs_named(flink_master: str, name: str) -> list[str]:
    """Ids of the jobs called ``name`` that are not over (running, restarting, cancelling, ...)."""
    return [
        job["jid"]
        for job in _rest(flink_master, "/jobs/overview")["jobs"]
        if job["name"] == name and job["state"] not in TERMINAL_JOB_STATES
    ]


def cancel_jobs_named(flink_master: str, name: str, timeout: float = 60) -> list[str]:
    """Cancel every live job called ``name`` on a session cluster (REST ``host:port``) and wait
    until they are over, so their slots are free and none of them reads or commits any more.

    A stream's Flink job outlives a launcher that dies without cancelling it: Beam's job server
    dies with the launcher, and with EXTERNAL or PROCESS workers the job reads on, committing
    offsets beside the next run's. The next run of the same stream calls this first."""
    cancelled = live_jobs_named(flink_master, name)
    for job in cancelled:
        try:
            _rest(flink_master, f"/jobs/{job}?mode=cancel", method="PATCH")
        except urllib.error.HTTPError as error:
            if error.code != 404:  # it ended meanwhile
                raise
    deadline = time.monotonic() + timeout
    while cancelled and live_jobs_named(flink_master, name):
        if time.monotonic() > deadline:
            raise FlinkError(
                f"the previous Flink job(s) {', '.join(cancelled)} named {name!r} were not cancelled "
                f"within {timeout:.0f} s"
            )
        time.sleep(0.2)
    return cancelled


def _flatten(tree: dict, prefix: str = "") -> dict:
    """Flink reads nested and dotted keys alike; flat keys let ours replace the defaults'."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _config(
    home: Path,
    work: Path,
    rest_port: int,
    rpc_port: int,
    slots: int,
    jobmanager_memory: str,
    taskmanager_memory: str,
    extra: dict,
) -> dict:
    """The distribution's config.yaml (which carries the add-opens Java 17 needs) with this cluster's
    ports, memory and directories, and the pipeline venv's Python for PyFlink's Python workers
    (which otherwise start plain ``python``; Beam's own workers are set by ``flink_pipeline_args``)."""
    config = _flatten(yaml.safe_load((home / "conf" / "config.yaml").read_text()) or {})
    config.update(
        {
            "jobmanager.rpc.address": "localhost",
            "jobmanager.rpc.port": rpc_port,
            "jobmanager.bind-host": "localhost",
            "taskmanager.host": "localhost",
            "taskmanager.bind-host": "localhost",
            "rest.address": "localhost",
            "rest.bind-address": "localhost",
            "rest.port": rest_port,
            "jobmanager.memory.process.size": jobmanager_memory,
            "taskmanager.memory.process.size": taskmanager_memory,
            "taskmanager.numberOfTaskSlots": slots,
            "parallelism.default": slots,
            "env.log.dir": str(work / "log"),
            "env.pid.dir": str(work / "pids"),
            "env.stdout-err.redirect-to-file": True,
            "io.tmp.dirs": str(work / "tmp"),
            "web.tmpdir": str(work / "tmp"),
            "blob.storage.directory": str(work / "tmp"),
            "python.executable": str(PIPELINE_PYTHON),
            "python.client.executable": str(PIPELINE_PYTHON),
            **extra,
        }
    )
    return config


def _start_service(home: Path, work: Path, service: str, die_with_parent: bool) -> subprocess.Popen:
    """One of the cluster's JVMs, in its own process group, with the work dir's config."""
    env = {**os.environ, "FLINK_HOME": str(home), "FLINK_CONF_DIR": str(work / "conf")}
    # setpriv (util-linux) has the kernel SIGTERM the JVM when its parent dies, even by SIGKILL;
    # it survives both execs below, so a crashed test session leaves no cluster behind.
    tie = ["setpriv", "--pdeathsig", "TERM"] if die_with_parent else []
    # start-foreground execs the JVM in place of the script: our child *is* the JVM, so its pid
    # and process group are known and poll() tells if it died.
    return subprocess.Popen(
        [*tie, str(home / "bin" / f"{service}.sh"), "start-foreground"],
        env=env,
        cwd=work,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


class LocalFlink:
    """``LocalFlink.start(work_dir)``; ``rest_url`` is the ``--flink_master``; ``stop()`` ends both processes."""

    def __init__(self, work: Path, rest_port: int, pids: dict[str, int]):
        self.work, self.rest_port, self.pids = work, rest_port, pids

    @property
    def rest_url(self) -> str:
        return f"http://localhost:{self.rest_port}"

    @property
    def flink_master(self) -> str:
        return f"localhost:{self.rest_port}"

    @property
    def log_dir(self) -> Path:
        return self.work / "log"

    @classmethod
    def start(
        cls,
        work: Path,
        slots: int = 2,
        jobmanager_memory: str = "768m",
        taskmanager_memory: str = "1536m",
        timeout: float = 120,
        die_with_parent: bool = False,
        config: dict | None = None,
    ) -> "LocalFlink":
        """Start a JobManager and a TaskManager with the distribution's own scripts, each in its own
        process group, and wait until the TaskManager has registered its slots.

        ``die_with_parent`` ties the cluster's life to the calling thread (for tests: start it from
        the main thread); without it the cluster outlives the caller until ``attach(work).stop()``.
        """
        home = flink_home()
        work = Path(work).resolve()
        for sub in ("conf", "log", "pids", "tmp"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        for name in (home / "conf").iterdir():  # log4j and logback configs as the distribution has them
            if name.is_file() and name.name != "config.yaml":
                shutil.copy(name, work / "conf" / name.name)
        rest_port = free_port()
        settings = _config(
            home, work, rest_port, free_port(), slots, jobmanager_memory, taskmanager_memory, config or {}
        )
        (work / "conf" / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=True))
        processes = {service: _start_service(home, work, service, die_with_parent) for service in SERVICES}
        pids = {service: process.pid for service, process in processes.items()}
        (work / "cluster.json").write_text(json.dumps({"rest_port": rest_port, "pids": pids}))
        cluster = cls(work, rest_port, pids)
        cluster._wait_until_ready(processes, timeout)
        return cluster

    def kill_taskmanager(self) -> None:
        """SIGKILL the TaskManager's process group, as a crashed host would lose it: its tasks fail
        at once. ``start_taskmanager`` brings a new one."""
        pid = self.pids["taskmanager"]
        if self._ours(pid):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self._ours(pid) and time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.1)

    def start_taskmanager(self, timeout: float = 120, die_with_parent: bool = False) -> None:
        """Start a new TaskManager (after ``kill_taskmanager``) and wait until the JobManager
        lists it with every slot free: the dead one's entry stays until its heartbeat times out."""
        before = {tm["id"] for tm in self.taskmanagers()}
        process = _start_service(flink_home(), self.work, "taskmanager", die_with_parent)
        self.pids["taskmanager"] = process.pid
        (self.work / "cluster.json").write_text(json.dumps({"rest_port": self.rest_port, "pids": self.pids}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise FlinkError(f"the new Flink taskmanager exited with {process.returncode}; see {self.log_dir}")
            if any(tm["id"] not in before and tm["freeSlots"] == tm["slotsNumber"] for tm in self.taskmanagers()):
                return
            time.sleep(0.5)
        raise FlinkError(f"the new TaskManager did not register in {timeout:.0f} s; see the logs in {self.log_dir}")

    def _wait_until_ready(self, processes: dict[str, subprocess.Popen], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for service, process in processes.items():
                if process.poll() is not None:
                    self.stop()
                    raise FlinkError(f"the Flink {service} exited with {process.returncode}; see {self.log_dir}")
            if self.taskmanagers():
                return
            time.sleep(0.5)
        self.stop()
        raise FlinkError(f"no Flink TaskManager registered in {timeout:.0f} s; see the logs in {self.log_dir}")

    @classmethod
    def attach(cls, work: Path) -> "LocalFlink":
        work = Path(work).resolve()
        try:
            state = json.loads((work / "cluster.json").read_text())
        except (OSError, ValueError):
            raise FlinkError(f"no local Flink cluster was started in {work}") from None
        return cls(work, state["rest_port"], state["pids"])

    def rest(self, path: str, timeout: float = 5):
        """GET one of the REST API's resources, decoded from JSON."""
        with urllib.request.urlopen(f"{self.rest_url}{path}", timeout=timeout) as response:
            return json.load(response)

    def taskmanagers(self) -> list[dict]:
        """The registered TaskManagers, or [] while the REST API is not up."""
        try:
            return self.rest("/taskmanagers")["taskmanagers"]
        except (OSError, ValueError, KeyError):
            return []

    def status(self) -> dict | None:
        """The REST API's cluster overview (taskmanagers, slots-total, jobs-running, ...), None if it is down."""
        try:
            return self.rest("/overview")
        except (OSError, ValueError):
            return None

    def effective_config(self) -> dict[str, str]:
        """The JobManager's configuration as Flink parsed it."""
        return {entry["key"]: entry["value"] for entry in self.rest("/jobmanager/config")}

    def cancel_running_jobs(self) -> list[str]:
        """Cancel every job still running, through the REST API: Beam's job server does not pass
        a ``result.cancel()`` on to a remote cluster, and a LOOPBACK job whose submitter is gone
        would otherwise restart forever."""
        cancelled = []
        for job in self.rest("/jobs")["jobs"]:
            if job["status"] not in ("FINISHED", "CANCELED", "FAILED"):
                request = urllib.request.Request(f"{self.rest_url}/jobs/{job['id']}?mode=cancel", method="PATCH")
                urllib.request.urlopen(request, timeout=5).close()
                cancelled.append(job["id"])
        return cancelled

    def _ours(self, pid: int) -> bool:
        """Is ``pid`` still one of this cluster's JVMs? Its command line names the work dir; a
        recycled pid (after a reboot, say) does not, and is never signalled."""
        try:
            return str(self.work) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False

    def alive(self) -> list[str]:
        """The services whose JVM is still running."""
        return [service for service, pid in self.pids.items() if self._ours(pid)]

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM both process groups (Flink shuts down cleanly on it), SIGKILL what is left at the timeout."""
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in self.pids.values():
                try:
                    os.waitpid(pid, os.WNOHANG)  # reap our own children so they do not linger as zombies
                except ChildProcessError:
                    pass  # started by another process (attach): only /proc can tell
            if not self.alive():
                break
            time.sleep(0.2)
        else:
            self._signal(signal.SIGKILL)
        (self.work / "cluster.json").unlink(missing_ok=True)

    def _signal(self, sig: int) -> None:
        for pid in self.pids.values():
            if self._ours(pid):
                try:
                    os.killpg(pid, sig)  # the JVM leads its own session, so its group is its pid
                except ProcessLookupError:
                    pass
