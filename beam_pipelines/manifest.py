"""Chunk manifests: what a chunk read, what it wrote, and proof that both are unchanged.

A manifest is written (atomically and durably) when its chunk starts, as ``running``, and again
when it completes. A chunk is skipped on restart only if its manifest says ``complete`` and every
input and output still has the size and checksum recorded. Outputs are recorded relative to the
output directory, so a directory can be moved or copied and still checked; inputs by absolute
path. A manifest that cannot be read is damaged: its chunk runs again, and ``validate`` reports it.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

from io_connectors.atomic_files import write_json_atomically
from io_connectors.bar_tables import every_bar_directory
from io_connectors.paths import is_remote

MANIFEST_DIR = "_manifests"
SEAM_FILE = "part-seams.parquet"
"""Filled bars between chunks (``beam_pipelines.seams``): written by the run, not by a chunk."""


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


def input_path(path: str) -> str:
    """How a manifest names an input: absolute, so a run resumed from another directory matches it."""
    return path if is_remote(path) else os.path.abspath(path)


@dataclass
class FileRecord:
    path: str
    """Relative to the output directory for outputs (``of(path, out)``), else as ``input_path`` names it."""
    size: int
    sha256: str

    @classmethod
    def of(cls, path: str, out: str | None = None) -> "FileRecord":
        stored = os.path.relpath(path, out) if out is not None else input_path(path)
        return cls(stored, os.path.getsize(path), sha256_of(path))

    def location(self, out: str) -> str:
        """Where the file is, for a manifest of the output directory ``out``."""
        return os.path.join(out, self.path)

    def problem(self, out: str) -> str | None:
        path = self.location(out)
        if not os.path.exists(path):
            return f"{self.path} is missing"
        if os.path.getsize(path) != self.size or sha256_of(path) != self.sha256:
            return f"{self.path} changed (size or checksum differs from the manifest)"
        return None


class DamagedManifest(ValueError):
    """A manifest file that is not a manifest: empty, cut short, or with fields this version lacks."""


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
        write_json_atomically(asdict(self), self.path_for(out, self.chunk_id), durable=True)

    @classmethod
    def load(cls, path: str) -> "ChunkManifest":
        """The manifest in ``path``; DamagedManifest if it is not one."""
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            data["inputs"] = [FileRecord(**r) for r in data.get("inputs", [])]
            data["outputs"] = [FileRecord(**r) for r in data.get("outputs", [])]
            manifest = cls(**data)
        except (OSError, ValueError, TypeError, AttributeError) as error:
            raise DamagedManifest(f"{type(error).__name__}: {error}") from None
        records_typed = all(
            isinstance(r.path, str) and isinstance(r.size, int) and isinstance(r.sha256, str)
            for r in manifest.inputs + manifest.outputs
        )
        if (
            manifest.chunk_id != chunk_id_of(path)
            or not isinstance(manifest.settings, dict)
            or not isinstance(manifest.counts, dict)
            or not records_typed
        ):
            raise DamagedManifest("its chunk id, settings, counts or files are not what a manifest holds")
        return manifest

    @classmethod
    def scan(cls, out: str) -> tuple[list["ChunkManifest"], dict[str, str]]:
        """(the readable manifests, {chunk id: why its manifest is damaged})."""
        manifests, damaged = [], {}
        for path in sorted(glob.glob(os.path.join(out, MANIFEST_DIR, "*.json"))):
            try:
                manifests.append(cls.load(path))
            except DamagedManifest as error:
                damaged[chunk_id_of(path)] = str(error)
        return manifests, damaged

    @classmethod
    def all_in(cls, out: str) -> list["ChunkManifest"]:
        return cls.scan(out)[0]

    def problems(self, out: str, check_inputs: bool = True) -> list[str]:
        """Why this chunk of the output directory ``out`` cannot be trusted as complete (empty when it can)."""
        found = [] if self.status == "complete" else [f"chunk {self.chunk_id} is {self.status}"]
        found += [f"chunk {self.chunk_id}: {p}" for p in (r.problem(out) for r in self.outputs) if p]
        if check_inputs:
            found += [f"chunk {self.chunk_id}: {p}" for p in (r.problem("") for r in self.inputs) if p]
        return found


def chunk_id_of(manifest_path: str) -> str:
    return os.path.basename(manifest_path)[: -len(".json")]


def chunk_output_files(out: str, chunk_id: str) -> list[str]:
    """Every file a chunk wrote: they all carry its id in their name."""
    found = []
    for directory in (*every_bar_directory(), "dead_letter"):
        for name in (f"part-{chunk_id}.parquet", f"part-{chunk_id}.avro"):
            found += glob.glob(os.path.join(out, directory, "**", name), recursive=True)
    return sorted(found)


def remove_stale_outputs(out: str, chunk_id: str, not_before: float) -> None:
    """Remove a chunk's files that the latest attempt (started at ``not_before``) did not write."""
    for path in chunk_output_files(out, chunk_id):
        if os.path.getmtime(path) < not_before:
            os.remove(path)


def remove_previous_run(out: str, also: tuple[str, ...] = ()) -> None:
    """``--overwrite``: remove what earlier backfills wrote, as their manifests (damaged ones by
    their chunk's file names) record it, the files ``also``'s patterns match, then the manifests.
    Nothing else in ``out`` is touched, so files a user keeps there survive."""
    manifests, damaged = ChunkManifest.scan(out)
    written = {r.location(out) for m in manifests for r in m.outputs}
    for chunk_id in [m.chunk_id for m in manifests] + list(damaged):
        written.update(chunk_output_files(out, chunk_id))
        written.add(ChunkManifest.path_for(out, chunk_id))
    for pattern in also:
        written.update(glob.glob(os.path.join(out, pattern), recursive=True))
    root = os.path.realpath(out)
    for path in written:
        inside = os.path.commonpath([root, os.path.realpath(path)]) == root  # a manifest is not trusted to point out
        if inside and os.path.isfile(path):
            os.remove(path)
    _remove_empty_directories(out)


def _remove_empty_directories(out: str) -> None:
    for top in (*every_bar_directory(), "dead_letter", MANIFEST_DIR):
        for directory, _subdirectories, _files in sorted(os.walk(os.path.join(out, top)), reverse=True):
            if not os.listdir(directory):
                os.rmdir(directory)


def remove_temporary_files(out: str) -> None:
    """Temporary files a killed run left behind (their names start with a dot)."""
    for path in glob.glob(os.path.join(out, "**", ".*.tmp"), recursive=True):
        os.remove(path)
