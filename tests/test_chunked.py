"""Chunked, resumable backfills: kills at random points lose nothing, changed inputs are redone,
corrupted outputs are caught by validate."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from tests.support.backfills import backfill, write_days
from tests.support.commands import cryptobeam, run_backfill
from tests.support.outputs import bars_of, summary
from tests.support.paths import CLI, ROOT


def two_workers(days: Path, out: Path, *extra) -> list[str]:
    """The command line of a backfill of the days in chunks of a day, two at a time."""
    return [
        CLI,
        "backfill",
        "--source",
        "binance-aggtrades",
        "--input",
        str(days / "*.zip"),
        "--interval",
        "1m",
        "--out",
        str(out),
        "--no-progress",
        "--chunk",
        "1d",
        "--workers",
        "2",
        *extra,
    ]


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    folder = tmp_path_factory.mktemp("days")
    write_days(folder, 6)
    return folder


@pytest.fixture(scope="module")
def reference(days, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    result = backfill(days, out)
    assert result.returncode == 0, result.stderr
    return out


def test_chunked_equals_unchunked_and_validates(days, reference, tmp_path):
    out = tmp_path / "out"
    result = backfill(days, out, "--chunk", "1d")
    assert result.returncode == 0, result.stderr
    assert bars_of(out) == bars_of(reference)
    assert (summary(out)["chunks"], summary(out)["chunks_run"]) == (6, 6)
    manifests = sorted((out / "_manifests").glob("*.json"))
    assert [m.stem for m in manifests] == [f"2024-01-0{d}" for d in range(1, 7)]
    first = json.loads(manifests[0].read_text())
    assert first["status"] == "complete" and first["inputs"][0]["sha256"] and first["outputs"]
    assert first["counts"]["records_in"] == 3000 and first["seconds"] > 0
    check = cryptobeam("validate", str(out))
    assert check.returncode == 0, check.stdout


def test_the_command_plans_and_sums_up_a_local_backfill_without_importing_beam(days, reference, tmp_path):
    """Workers fork from a server that imports Beam while the command plans. Were the command to
    import it too (about a second), every worker would start that much later. The first chunks'
    inputs are checksummed by the command meanwhile, and must match the files."""
    out = tmp_path / "out"
    script = (
        "import sys; from beam_pipelines import cli; "
        f"code = cli.main(['backfill', '--source', 'binance-aggtrades', '--input', {str(days / '*.zip')!r}, "
        f"'--interval', '1m', '--out', {str(out)!r}, '--no-progress', '--chunk', '1d', '--workers', '2']); "
        "print(code, 'apache_beam' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.stdout.split()[-2:] == ["0", "False"], result.stdout + result.stderr
    unfilled = [b for b in bars_of(reference) if not b["is_filled"]]
    assert bars_of(out) == unfilled
    manifests = [json.loads(m.read_text()) for m in sorted((out / "_manifests").glob("*.json"))]
    assert len(manifests) == 6
    for manifest in manifests:
        [record] = manifest["inputs"]
        assert record["sha256"] == hashlib.sha256(Path(record["path"]).read_bytes()).hexdigest()


def test_killed_runs_resume_to_the_same_output(days, reference, tmp_path):
    started = time.monotonic()
    subprocess.run(two_workers(days, tmp_path / "timed", "--fill-gaps"), check=True, capture_output=True, timeout=600)
    whole_run_s = time.monotonic() - started
    out = tmp_path / "out"
    rng = random.Random(11)
    kills = 0
    for _ in range(6):
        complete = sum(json.loads(m.read_text())["status"] == "complete" for m in (out / "_manifests").glob("*.json"))
        process = subprocess.Popen(
            two_workers(days, out, "--fill-gaps"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # Somewhere inside this run, however fast the machine: resumed runs only do what is left.
        time.sleep(rng.uniform(0.2, 0.9) * whole_run_s * max(6 - complete, 1) / 6)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 3, "the runs finished too fast to be interrupted"
    print(f"\nkill/resume: {kills} SIGKILLs survived, then resumed")
    result = backfill(days, out, "--chunk", "1d")
    assert result.returncode == 0, result.stderr
    assert bars_of(out) == bars_of(reference)
    assert summary(out)["records_in"] == 6 * 3000 and summary(out)["reconciled"]
    assert not list(out.rglob(".*.tmp"))
    check = cryptobeam("validate", str(out))
    assert check.returncode == 0, check.stdout


def test_rerun_skips_complete_chunks_and_redoes_changed_ones(tmp_path):
    days = tmp_path / "days"
    write_days(days, 3, per_day=500, seed=2)
    out = tmp_path / "out"
    assert backfill(days, out, "--chunk", "1d").returncode == 0
    again = backfill(days, out, "--chunk", "1d")
    assert again.returncode == 0 and (summary(out)["chunks_run"], summary(out)["chunks_skipped"]) == (0, 3)
    write_days(days, 1, per_day=700, seed=99, first=date(2024, 1, 2))  # replace the 2nd day's file
    changed = backfill(days, out, "--chunk", "1d")
    assert changed.returncode == 0 and summary(out)["chunks_run"] == 1
    assert summary(out)["records_in"] == 500 + 700 + 500


def test_validate_catches_a_corrupted_file_and_broken_invariants(tmp_path):
    days = tmp_path / "days"
    write_days(days, 2, per_day=300, seed=3)
    out = tmp_path / "out"
    assert backfill(days, out, "--chunk", "1d").returncode == 0
    victim = next(out.rglob("part-2024-01-02.parquet"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    check = cryptobeam("validate", str(out))
    assert check.returncode == 1 and "changed" in check.stdout


def test_validate_reports_missing_trade_ids(tmp_path):
    days = tmp_path / "days"
    write_days(days, 3, per_day=300, seed=4)
    (days / "BTCUSDT-aggTrades-2024-01-02.zip").unlink()  # a missing day: ids jump
    out = tmp_path / "out"
    assert backfill(days, out).returncode == 0
    check = cryptobeam("validate", str(out))
    assert check.returncode == 1 and "trade id(s) missing" in check.stdout


def test_from_to_and_settings_conflicts(tmp_path):
    days = tmp_path / "days"
    write_days(days, 4, per_day=200, seed=6)
    out = tmp_path / "out"
    result = backfill(days, out, "--from", "2024-01-02", "--to", "2024-01-03", "--chunk", "1d")
    assert result.returncode == 0 and summary(out)["records_in"] == 400
    other = run_backfill("binance-aggtrades", days / "*.zip", out, "--interval", "5m")
    assert other.returncode == 2 and "--overwrite" in other.stderr
    bad = backfill(days, out, "--from", "2024-13-01")
    assert bad.returncode == 2 and "bad --from" in bad.stderr


def test_a_redone_chunk_drops_files_it_no_longer_writes(tmp_path):
    days = tmp_path / "days"
    write_days(days, 1, per_day=200, seed=8)
    out = tmp_path / "out"
    assert backfill(days, out, "--chunk", "1d").returncode == 0
    stale = out / "bars" / "exchange=binance" / "symbol=OLDCOIN" / "date=2024-01-01" / "part-2024-01-01.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(next(out.rglob("part-2024-01-01.parquet")).read_bytes())
    time.sleep(0.01)
    os.utime(stale, (0, 0))  # as if written by an earlier attempt
    manifest = out / "_manifests" / "2024-01-01.json"
    manifest.write_text(manifest.read_text().replace('"complete"', '"running"'))
    assert backfill(days, out, "--chunk", "1d").returncode == 0
    assert not stale.exists() and summary(out)["chunks_run"] == 1


def test_validate_recounts_from_disk_and_works_without_manifests(tmp_path):
    days = tmp_path / "days"
    write_days(days, 2, per_day=300, seed=9)
    out = tmp_path / "out"
    assert backfill(days, out, "--chunk", "1d").returncode == 0
    manifest_path = out / "_manifests" / "2024-01-01.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["counts"]["records_in"] += 1  # a record the files do not account for
    manifest["counts"]["unique_trades"] += 1
    manifest["counts"]["trades_in_final_bars"] += 1
    manifest_path.write_text(json.dumps(manifest))
    check = cryptobeam("validate", str(out))
    assert check.returncode == 1 and "on disk" in check.stdout
    for path in (out / "_manifests").glob("*.json"):
        path.unlink()  # a backfill's files with no manifest: their records are accounted for nowhere
    check = cryptobeam("validate", str(out))
    assert check.returncode == 1 and "recorded by no manifest" in check.stdout, check.stdout


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, grew = set(), {root}
    while grew:
        grew = {pid for pid, parent in parents.items() if parent in grew} - found
        found |= grew
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_the_command(days, tmp_path):
    """Only the command is killed (not its process group): its fork server and workers must go
    too, rather than finish their chunks beside a rerun."""
    process = subprocess.Popen(
        two_workers(days, tmp_path / "out"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_descendants(process.pid)) < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until the fork server and both workers exist
        left = _descendants(process.pid)
        assert len(left) >= 3, "the workers never started"
        process.kill()
        process.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in left):
            time.sleep(0.1)
        alive = [pid for pid in left if os.path.exists(f"/proc/{pid}")]
        assert not alive, f"processes outlived the killed command: {alive}"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
