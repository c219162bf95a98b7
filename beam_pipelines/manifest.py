"""Chunk manifests: what a chunk read, what it wrote, and proof that both are unchanged.

A manifest is written (atomically) when its chunk starts, as ``running``, and again when it
completes. A chunk is skipped on restart only if its manifest says ``complete`` and every input
and output still has the size and checksum recorded.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

from io_connectors.atomic_files import write_json_atomically

MANIFEST_DIR = "_manifests"


def sha256_of(path: str) -> str:
    """The file's checksum; each process hashes an unchanged file once, however many of its time
    slices it runs."""
    stat = os.stat(path)
    return _sha256_of(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _sha256_of(path: str, _size: int, _mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class FileRecord:
    path: str
    size: int
    sha256: str

    @classmethod
    def of(cls, path: str) -> "FileRecord":
        return cls(path, os.path.getsize(path), sha256_of(path))

    def problem(self) -> str | None:
        if not os.path.exists(self.path):
            return f"{self.path} is missing"
        if os.path.getsize(self.path) != self.size or sha256_of(self.path) != self.sha256:
            return f"{self.path} changed (size or checksum differs from the manifest)"
        return None


@dataclass
class ChunkManifest:
    chunk_id: str
    settings: dict
    status: str = "running"
    inputs: list[FileRecord] = field(default_factory=list)
    outputs: list[FileRecord] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    started_at: float = 0.0
    finished_at: float | None = None
    seconds: float | None = None

    @staticmethod
    def path_for(out: str, chunk_id: str) -> str:
        return os.path.join(out, MANIFEST_DIR, f"{chunk_id}.json")

    def write(self, out: str) -> None:
        os.makedirs(os.path.join(out, MANIFEST_DIR), exist_ok=True)
        write_json_atomically(asdict(self), self.path_for(out, self.chunk_id))

    @classmethod
    def load(cls, path: str) -> "ChunkManifest":
        data = json.loads(open(path).read())
        data["inputs"] = [FileRecord(**r) for r in data.get("inputs", [])]
        data["outputs"] = [FileRecord(**r) for r in data.get("outputs", [])]
        return cls(**data)

    @classmethod
    def all_in(cls, out: str) -> list["ChunkManifest"]:
        return [cls.load(p) for p in sorted(glob.glob(os.path.join(out, MANIFEST_DIR, "*.json")))]

    def problems(self, check_inputs: bool = True) -> list[str]:
        """Why this chunk cannot be trusted as complete (empty when it can)."""
        found = [] if self.status == "complete" else [f"chunk {self.chunk_id} is {self.status}"]
        records = (self.inputs if check_inputs else []) + self.outputs
        found += [f"chunk {self.chunk_id}: {p}" for p in (r.problem() for r in records) if p]
        return found


def chunk_output_files(out: str, chunk_id: str) -> list[str]:
    """Every file a chunk wrote: they all carry its id in their name."""
    found = []
    for directory in ("bars", "bars_avro", "dead_letter"):
        for name in (f"part-{chunk_id}.parquet", f"part-{chunk_id}.avro"):
            found += glob.glob(os.path.join(out, directory, "**", name), recursive=True)
    return sorted(found)


def remove_stale_outputs(out: str, chunk_id: str, not_before: float) -> None:
    """Remove a chunk's files that the latest attempt (started at ``not_before``) did not write."""
    for path in chunk_output_files(out, chunk_id):
        if os.path.getmtime(path) < not_before:
            os.remove(path)


def remove_temporary_files(out: str) -> None:
    """Temporary files a killed run left behind (their names start with a dot)."""
    for path in glob.glob(os.path.join(out, "**", ".*.tmp"), recursive=True):
        os.remove(path)
