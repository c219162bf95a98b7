"""Files that appear all at once: written under a hidden temporary name, then renamed into place.

A reader, or a crash, never sees a partial file under its final name. Local paths use the
operating system directly; other schemes (gs://, s3://) go through Beam's FileSystems, imported
only for them, so the command line can write its summary without importing Beam.
"""

from __future__ import annotations

import json
import os
import uuid

from io_connectors.paths import beam_file_systems, is_remote


def write_atomically(data: bytes, final_path: str, durable: bool = False) -> None:
    """``durable``: the data and the rename reach the disk before this returns (fsync of the file,
    then of its directory), so a power cut leaves the old file or the new one, never an empty one."""
    directory, name = final_path.rsplit("/", 1)
    temporary = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
    if is_remote(final_path):
        _write_remote(data, directory, temporary, final_path)
        return
    os.makedirs(directory, exist_ok=True)  # chunk workers writing one partition may race to create it
    with open(temporary, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temporary, final_path)
    if durable:
        _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_remote(data: bytes, directory: str, temporary: str, final_path: str) -> None:
    file_systems = beam_file_systems()
    if not file_systems.exists(directory):
        try:
            file_systems.mkdirs(directory)
        except OSError:
            if not file_systems.exists(directory):  # losing a race to create it is fine
                raise
    with file_systems.create(temporary) as handle:
        handle.write(data)
    file_systems.rename([temporary], [final_path])


def write_json_atomically(document: dict, final_path: str, durable: bool = False) -> None:
    write_atomically(json.dumps(document, indent=2, sort_keys=True, default=str).encode(), final_path, durable)
