"""Local or remote, and which local files a path or pattern names.

The standard library only: the command uses it first thing, to decide whether to start the chunk
workers' fork server, and again to match the inputs it plans with, so both see the same files.
Beam's FileSystems, for reading files and for remote paths, loads only when asked for.
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


def beam_file_systems():
    """Beam's ``FileSystems``: local paths and gs://, s3:// and the like alike."""
    # Only when asked: the command line matches local inputs and writes local manifests before Beam loads
    from apache_beam.io.filesystems import FileSystems

    return FileSystems
