"""One run at a time per output directory: an exclusive ``flock`` on ``<out>/.lock``.

The lock belongs to the command's open file, so the kernel releases it when the command ends,
however it ends; a killed run never leaves a stale lock behind (its chunk workers, which do not
hold the lock, die with it). Remote outputs (gs://, s3://) are not locked.
"""

from __future__ import annotations

import fcntl
import os

from io_connectors.paths import is_remote

LOCK_NAME = ".lock"
_HELD: dict[str, int] = {}


class OutputLocked(RuntimeError):
    """Another run holds the output directory."""


def lock_output_directory(out: str) -> None:
    """Hold ``out``'s lock until this process ends; OutputLocked if another run holds it."""
    if is_remote(out):
        return
    key = os.path.realpath(out)
    if key in _HELD:
        return
    os.makedirs(out, exist_ok=True)
    descriptor = os.open(os.path.join(out, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(descriptor)
        os.close(descriptor)
        raise OutputLocked(
            f"another cryptobeam run{holder} is writing to {out!r}; wait for it to end or choose another --out"
        ) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, str(os.getpid()).encode())
    _HELD[key] = descriptor


def _holder(descriptor: int) -> str:
    try:
        pid = os.pread(descriptor, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
