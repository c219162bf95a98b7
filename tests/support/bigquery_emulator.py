"""A real local BigQuery emulator (local-bigquery), started and stopped by the test session."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from runners.ports import free_port
from tests.support.paths import ROOT

EMULATOR = ROOT / ".tools" / "bigquery-emulator"


class BigQueryEmulator:
    def __init__(self, data_dir: Path):
        binary = EMULATOR / "venv" / "bin" / "local-bigquery"
        if not binary.exists():
            raise RuntimeError("the BigQuery emulator is not installed: run bash scripts/setup.sh")
        self.port, grpc_port = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(data_dir / "emulator.log", "w")
        env = {**os.environ, "HOME": str(EMULATOR / "home")}
        self.process = subprocess.Popen(
            [
                str(binary),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--grpc-port",
                str(grpc_port),
                "--data-dir",
                str(data_dir / "data"),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._wait_until_ready()

    def _wait_until_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the BigQuery emulator exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the BigQuery emulator did not start in time")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
