"""A real standalone Flink session cluster (one JobManager, one TaskManager) on localhost.

Built from the Flink distribution that the ``apache-flink`` wheel ships inside ``pyflink/`` and
from Beam's Flink job server jar, both installed by ``scripts/install_flink.sh`` into
``.tools/flink`` (the wheel pins an old apache-beam, so it lives in its own virtualenv, never in
``.venv``). Each cluster gets free ports and its own work directory holding its config, logs and
pid files. Used by the test suite; ``flink_pipeline_args`` gives the FlinkRunner options that run
this project's pipelines on it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
TOOLS = ROOT / ".tools" / "flink"
FLINK_VERSION = "1.19"  # pass as --flink_version: the newest Flink whose Beam runner Maven Central has here
BEAM_RUNNER_VERSION = "2.62.0"  # the Java side; see runners/local_flink/pom.xml for why not 2.77
PIPELINE_PYTHON = ROOT / ".venv" / "bin" / "python"  # not resolved: the venv's symlink must stay the venv's
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flatten(tree: dict, prefix: str = "") -> dict:
    """Flink reads nested and dotted keys alike; flat keys let ours replace the defaults'."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _config(home: Path, work: Path, rest_port: int, rpc_port: int, slots: int, jobmanager_memory: str,
            taskmanager_memory: str, extra: dict) -> dict:
    """The distribution's config.yaml (which carries the add-opens Java 17 needs) with this cluster's
    ports, memory, directories, and the pipeline venv's Python for any Python worker Flink starts."""
    config = _flatten(yaml.safe_load((home / "conf" / "config.yaml").read_text()) or {})
    config.update({
        "jobmanager.rpc.address": "localhost", "jobmanager.rpc.port": rpc_port, "jobmanager.bind-host": "localhost",
        "taskmanager.host": "localhost", "taskmanager.bind-host": "localhost",
        "rest.address": "localhost", "rest.bind-address": "localhost", "rest.port": rest_port,
        "jobmanager.memory.process.size": jobmanager_memory, "taskmanager.memory.process.size": taskmanager_memory,
        "taskmanager.numberOfTaskSlots": slots, "parallelism.default": slots,
        "env.log.dir": str(work / "log"), "env.pid.dir": str(work / "pids"),
        "env.stdout-err.redirect-to-file": True,
        "io.tmp.dirs": str(work / "tmp"), "web.tmpdir": str(work / "tmp"), "blob.storage.directory": str(work / "tmp"),
        "python.executable": str(PIPELINE_PYTHON), "python.client.executable": str(PIPELINE_PYTHON),
        **extra,
    })
    return config


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the process that started it dies, even by
    SIGKILL, so a crashed test session leaves no cluster behind (Linux's PR_SET_PDEATHSIG)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


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
    def start(cls, work: Path, slots: int = 2, jobmanager_memory: str = "768m", taskmanager_memory: str = "1536m",
              timeout: float = 120, die_with_parent: bool = False, config: dict | None = None) -> "LocalFlink":
        """Start a JobManager and a TaskManager with the distribution's own scripts, each in its own
        process group, and wait until the TaskManager has registered its slots.

        ``die_with_parent`` ties the cluster's life to the calling thread's process (for tests);
        without it the cluster outlives the caller until ``stop()`` (``attach(work).stop()``).
        """
        home = flink_home()
        work = Path(work).resolve()
        for sub in ("conf", "log", "pids", "tmp"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        for name in (home / "conf").iterdir():  # log4j and logback configs as the distribution has them
            if name.is_file() and name.name != "config.yaml":
                shutil.copy(name, work / "conf" / name.name)
        rest_port = free_port()
        settings = _config(home, work, rest_port, free_port(), slots, jobmanager_memory, taskmanager_memory,
                           config or {})
        (work / "conf" / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=True))
        env = {**os.environ, "FLINK_HOME": str(home), "FLINK_CONF_DIR": str(work / "conf")}
        pids, processes = {}, {}
        for service in SERVICES:
            # start-foreground execs the JVM in place of the script: our child *is* the JVM, so
            # its pid and process group are known and poll() tells if it died.
            processes[service] = subprocess.Popen(
                [str(home / "bin" / f"{service}.sh"), "start-foreground"], env=env, cwd=work,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent if die_with_parent else None)
            pids[service] = processes[service].pid
        (work / "cluster.json").write_text(json.dumps({"rest_port": rest_port, "pids": pids}))
        cluster = cls(work, rest_port, pids)
        cluster._wait_until_ready(processes, timeout)
        return cluster

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

    def alive(self) -> list[str]:
        """The services whose process group still has a process."""
        running = []
        for service, pid in self.pids.items():
            try:
                os.killpg(pid, 0)
                running.append(service)
            except ProcessLookupError:
                pass
            except PermissionError:
                running.append(service)
        return running

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM both process groups (Flink shuts down cleanly on it), SIGKILL what is left at the timeout."""
        for pid in self.pids.values():
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in self.pids.values():
                try:
                    os.waitpid(pid, os.WNOHANG)  # reap our own children so they do not linger as zombies
                except ChildProcessError:
                    pass  # started by another process: only the signal probe can tell
            if not self.alive():
                break
            time.sleep(0.2)
        else:
            for pid in self.pids.values():
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        (self.work / "cluster.json").unlink(missing_ok=True)
