"""Files that appear all at once: written under a hidden temporary name, then renamed into place.

A reader, or a crash, never sees a partial file under its final name. Beam's FileSystems
makes this work on local disks and object stores alike.
"""
from __future__ import annotations

import json
import uuid

from apache_beam.io.filesystems import FileSystems


def write_atomically(data: bytes, final_path: str) -> None:
    directory, name = final_path.rsplit("/", 1)
    if not FileSystems.exists(directory):
        try:
            FileSystems.mkdirs(directory)
        except OSError:
            # Chunk workers writing the same partition race to create it; losing the race is fine.
            if not FileSystems.exists(directory):
                raise
    temporary = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
    with FileSystems.create(temporary) as handle:
        handle.write(data)
    FileSystems.rename([temporary], [final_path])


def write_json_atomically(document: dict, final_path: str) -> None:
    write_atomically(json.dumps(document, indent=2, sort_keys=True, default=str).encode(), final_path)
