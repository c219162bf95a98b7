"""Imported only by the chunk workers' fork server (as the first of its preloads): when the
command that started it ends, the server exits at once instead of tearing down the Beam, Arrow
and polars modules it imported. It holds the command's stdout and stderr, so a caller reading
them through a pipe would otherwise wait out that teardown (about half a second)."""
import atexit
import os

atexit.register(os._exit, 0)  # registered first, so it runs last: after every other exit handler
