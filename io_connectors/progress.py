"""Progress reporting from inside DoFns to the CLI, when both run in one process.

On the local runner DoFns run in the CLI's process, so a callback installed by the CLI can
drive its progress bar. On a cluster no callback is installed and these calls do nothing;
the runner's own UI shows progress there.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_listener = None


def set_progress_listener(listener) -> None:
    global _listener
    with _lock:
        _listener = listener


def report_progress(**amounts) -> None:
    listener = _listener
    if listener is not None:
        listener(**amounts)
