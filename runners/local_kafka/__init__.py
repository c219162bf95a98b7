"""A real single-node Kafka broker (KRaft, no ZooKeeper, no Docker) on localhost.

Built from Kafka's jars on Maven Central (``scripts/install_kafka.sh``); each broker gets free
ports and its own work directory with its config, data, log and pid file. Used by the test
suite and by ``cryptobeam kafka up|down``.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from runners.ports import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
LIBS = ROOT / ".tools" / "kafka" / "libs"


class KafkaError(RuntimeError):
    """The local broker cannot be started or reached."""


def _cluster_id() -> str:
    """A random KRaft cluster id. Like Kafka's own ``Uuid.randomUuid``, never one starting with
    '-': the storage tool would read it as an option (one start in 64 failed that way)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _server_properties(work: Path, port: int, controller_port: int) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={work / 'data'}",
            "num.partitions=1",
            "auto.create.topics.enable=true",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=-1",
            "",
        ]
    )


def _java(work: Path, main_class: str, *args: str, **popen) -> subprocess.Popen:
    if not (LIBS / ".complete").exists():
        raise KafkaError("Kafka is not installed: run bash scripts/install_kafka.sh (scripts/setup.sh does)")
    log4j = work / "log4j.properties"
    log4j.write_text(
        "log4j.rootLogger=WARN, file\nlog4j.appender.file=org.apache.log4j.FileAppender\n"
        f"log4j.appender.file.File={work / 'kafka.log'}\n"
        "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.file.layout.ConversionPattern=%d %p %c: %m%n\n"
    )
    command = [
        "java",
        "-Xms256m",
        "-Xmx512m",
        f"-Dlog4j.configuration=file:{log4j}",
        "-cp",
        f"{LIBS}/*",
        main_class,
        *args,
    ]
    return subprocess.Popen(command, **popen)


def _format_storage(work: Path, config: Path) -> None:
    formatting = _java(
        work,
        "kafka.tools.StorageTool",
        "format",
        "-t",
        _cluster_id(),
        "-c",
        str(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = formatting.communicate(timeout=120)
    if formatting.returncode != 0:
        raise KafkaError(f"formatting Kafka storage failed: {output.decode(errors='replace')[-500:]}")


def _configured_port(config: Path, listener: str) -> int:
    """The port a broker's ``server.properties`` gives ``listener`` (PLAINTEXT or CONTROLLER)."""
    for line in config.read_text().splitlines():
        if line.startswith("listeners="):
            for address in line.split("=", 1)[1].split(","):
                if address.startswith(f"{listener}://"):
                    return int(address.rsplit(":", 1)[1])
    raise KafkaError(f"{config} names no {listener} listener")


def _is_running(work: Path) -> bool:
    """A broker started in ``work`` whose process still exists."""
    try:
        pid = int((work / "kafka.pid").read_text())
        os.killpg(pid, 0)
    except (OSError, ValueError):
        return False
    return True


class LocalKafka:
    """Start with ``LocalKafka.start(work_dir)``; ``bootstrap`` is ``127.0.0.1:<port>``."""

    def __init__(self, work: Path, port: int, pid: int):
        self.work, self.port, self.pid = work, port, pid

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, work: Path, port: int | None = None, timeout: float = 90) -> "LocalKafka":
        """A new broker in ``work``; if a broker was started there before and has stopped, that
        broker again, with its data and, unless ``port`` says otherwise, its ports."""
        work = Path(work).resolve()
        work.mkdir(parents=True, exist_ok=True)
        config = work / "server.properties"
        if _is_running(work):
            raise KafkaError(f"a Kafka broker is already running in {work}")
        if (work / "data" / "meta.properties").exists() and config.exists():
            port, controller_port = (
                port or _configured_port(config, "PLAINTEXT"),
                _configured_port(config, "CONTROLLER"),
            )
            config.write_text(_server_properties(work, port, controller_port))
        else:
            port, controller_port = port or free_port(), free_port()
            config.write_text(_server_properties(work, port, controller_port))
            _format_storage(work, config)
        with open(work / "stdout.log", "ab") as out:
            process = _java(
                work, "kafka.Kafka", str(config), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        (work / "kafka.pid").write_text(str(process.pid))
        (work / "bootstrap").write_text(f"127.0.0.1:{port}")
        broker = cls(work, port, process.pid)
        broker._wait_until_ready(process, timeout)
        return broker

    def _wait_until_ready(self, process: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})  # quiet while it starts
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise KafkaError(f"Kafka exited with {process.returncode}; see {self.work / 'stdout.log'}")
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except Exception:  # the client raises KafkaException until the broker answers
                time.sleep(0.5)
        self.stop()
        raise KafkaError(f"Kafka did not become ready in {timeout:.0f} s; see {self.work / 'stdout.log'}")

    @classmethod
    def attach(cls, work: Path) -> "LocalKafka":
        work = Path(work).resolve()
        try:
            pid = int((work / "kafka.pid").read_text())
            port = int((work / "bootstrap").read_text().rsplit(":", 1)[1])
        except (OSError, ValueError):
            raise KafkaError(f"no local Kafka was started in {work}") from None
        return cls(work, port, pid)

    def stop(self, timeout: float = 30) -> None:
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0] == self.pid:
                    break  # our child has exited: reaped, not left a zombie that still looks alive
            except ChildProcessError:
                pass  # started by another process (``kafka up``): only the signal probe can tell
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.killpg(self.pid, signal.SIGKILL)
        (self.work / "kafka.pid").unlink(missing_ok=True)


def create_topics(bootstrap: str, topics: dict[str, int], timeout: float = 30) -> None:
    """Create topics (name -> partitions) and return once every partition has a leader.

    A consumer that subscribes to a topic its broker does not list yet looks for it again only at
    its next metadata refresh, five minutes later by default, and until then receives nothing.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1) for name, partitions in topics.items()]).values():
        future.result(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = admin.list_topics(timeout=timeout).topics
        if all(
            name in listed
            and len(listed[name].partitions) == partitions
            and all(p.leader >= 0 for p in listed[name].partitions.values())
            for name, partitions in topics.items()
        ):
            return
        time.sleep(0.1)
    raise KafkaError(f"topics {sorted(topics)} were created but have no leaders after {timeout:.0f} s")
