"""Kill-and-restart rounds of a stream on the local Flink cluster (issue 23, item 4).

    .venv/bin/python benchmarks/flink_restarts.py [--rounds 5]

Runs ``tests/test_flink_restarts.py`` with ``CRYPTOBEAM_FLINK_RESTART_ROUNDS``: the kills alternate
between the ``cryptobeam`` launcher (its process group, SIGKILL) and the TaskManager (SIGKILL, then
a new one), each once the running stream has committed offsets past the previous round's; a last
run drains the topic, and its final bars must equal the backfill's with the accounting reconciled.
Prints each round (what was killed, the committed offsets, how the launcher and the Flink job
ended) and the test's verdict.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "CRYPTOBEAM_FLINK_RESTART_ROUNDS": str(args.rounds)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", "tests/test_flink_restarts.py"],
        cwd=ROOT,
        env=env,
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
