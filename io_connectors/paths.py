"""Local or remote, and which local files a path or pattern names.

The standard library only: the command uses it first thing, to decide whether to start the chunk
workers' fork server, and again to match the inputs it plans with, so both see the same files.
"""

from __future__ import annotations

import glob
import os


def is_remote(path: str) -> bool:
    """gs://, s3:// and the like: Beam's FileSystems handles those, the OS the rest."""
    return "://" in path


def local_files(pattern: str) -> list[str]:
    """The files a local path or glob names, as Python's glob matches them: ``**`` as a whole path
    component spans directories, and hidden files count. A trailing separator names the files in
    that directory, as Beam's FileSystems did."""
    if pattern.endswith(("/", os.sep)):
        pattern += "*"
    return [p for p in glob.glob(pattern, recursive=True, include_hidden=True) if os.path.isfile(p)]
