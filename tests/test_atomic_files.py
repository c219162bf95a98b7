"""Files appear whole, and writers racing to create the same directory all succeed."""

from __future__ import annotations

import os
import threading

from io_connectors import atomic_files
from io_connectors.atomic_files import write_atomically


def test_losing_the_race_to_create_a_directory_still_writes(tmp_path, monkeypatch):
    """Another writer creates the directory just before we do (two chunk workers writing bars of
    the same partition): the write still lands."""
    directory = tmp_path / "bars" / "symbol=BTCUSDT"
    real_makedirs = os.makedirs
    calls = []

    def raced_makedirs(path, *args, **kwargs):
        if not calls:
            calls.append(path)
            real_makedirs(directory)  # the other writer wins
        return real_makedirs(path, *args, **kwargs)

    monkeypatch.setattr(atomic_files.os, "makedirs", raced_makedirs)
    write_atomically(b"bars", f"{directory}/part-0.parquet")
    assert calls == [str(directory)]
    assert (directory / "part-0.parquet").read_bytes() == b"bars"
    assert [p.name for p in directory.iterdir()] == ["part-0.parquet"]  # no temporary left behind


def test_many_writers_into_one_new_directory(tmp_path):
    directory = tmp_path / "bars" / "date=2024-01-01"
    start = threading.Barrier(8)
    errors = []

    def write(i):
        start.wait()
        try:
            write_atomically(str(i).encode(), f"{directory}/part-{i}.parquet")
        except Exception as error:  # noqa: BLE001 - the test reports any failure
            errors.append(error)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(p.name for p in directory.iterdir()) == [f"part-{i}.parquet" for i in range(8)]
