"""Imported only by the chunk workers' fork server, as the first of its preloads: the server lives
exactly as long as the command that started it.

- It dies with the command. Its workers hold the server's liveness pipe open, so the server would
  otherwise outlive a killed command until their chunks end, and they would go on writing
  output beside a rerun. With the server gone, its workers get SIGKILL too (``die_with_parent``).
- It exits at once instead of tearing down the Beam, Arrow and polars modules it imported. It
  holds the command's stdout and stderr, so a caller reading them through a pipe would otherwise
  wait out that teardown.
"""

import atexit
import os

from beam_pipelines.worker_server import die_with_parent

die_with_parent()
# Registered before the preloaded modules register theirs, so it runs after them; multiprocessing's
# own handler, registered earlier, is skipped: its workers are gone with the server (PDEATHSIG).
atexit.register(os._exit, 0)
