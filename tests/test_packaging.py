"""The wheel a non-editable install gets holds every package and every data file of the source
tree: a package listed by hand was once missed (runners.local_flink, so no ``cryptobeam flink``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from tests.support.paths import ROOT

NOT_SHIPPED = {"tests", "benchmarks", "scripts"}


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return listed.stdout.splitlines()


def shipped_files(tracked: list[str]) -> set[str]:
    """Every tracked file (module or data file) under a top-level package an install must carry."""
    roots = {name.split("/")[0] for name in tracked if name.count("/") == 1 and name.endswith("/__init__.py")}
    return {name for name in tracked if name.split("/")[0] in roots - NOT_SHIPPED}


def test_the_wheel_holds_every_package_and_data_file(tmp_path):
    tracked = tracked_files()
    expected = shipped_files(tracked)
    assert {name.split("/")[0] for name in expected} >= {
        "beam_pipelines",
        "io_connectors",
        "runners",
        "schemas",
        "transforms",
    }
    # Built from a copy of the tracked files, so the build leaves nothing in the checkout.
    source = tmp_path / "source"
    for name in expected | {"setup.py", "pyproject.toml"}:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(dist),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = dist.glob("cryptobeam-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
        [entry_points] = [n for n in in_wheel if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()

    assert sorted(expected - in_wheel) == [], "tracked files missing from the wheel"
    for needed in (
        "runners/local_flink/__init__.py",
        "runners/local_flink/pom.xml",
        "runners/local_kafka/pom.xml",
        "runners/dataflow/metadata.json",
        "schemas/bar.avsc",
    ):
        assert needed in in_wheel
    assert not {name.split("/")[0] for name in in_wheel} & NOT_SHIPPED
    assert "cryptobeam = beam_pipelines.cli:entry_point" in scripts
