"""Keep freed memory for reuse instead of handing it back to the kernel at once.

A backfill allocates and frees arrays of megabytes per batch. With glibc's defaults each one
is a fresh mmap whose pages fault in again, which on small VMs and sandboxes costs more than
the arithmetic on them. Raising the mmap and trim thresholds lets the heap keep and reuse those
pages; peak memory is unchanged, since the same arrays are live either way. Arrow's buffers are
then taken from that same heap: its default pool (mimalloc) hands freed pages back as well, to
be faulted in again.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pyarrow

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_SETTINGS = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 1 << 30, _M_TOP_PAD: 64 << 20}


def reuse_freed_memory() -> bool:
    """Apply the settings to this process (glibc only); False where they do not apply."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    if not all(mallopt(option, value) == 1 for option, value in _SETTINGS.items()):
        return False
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    return True
