"""Running the installed ``cryptobeam`` command, as a user would."""

from __future__ import annotations

import subprocess

from tests.support.paths import CLI, ROOT


def cli(*args, timeout=600):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout)


def cryptobeam(*args, cwd=ROOT):
    return subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
