"""Daily Binance aggTrades zips, and the chunked backfill of them through the installed command."""

from __future__ import annotations

import random
import zipfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from tests.support.commands import run_backfill


def write_days(folder: Path, days: int, per_day: int = 3000, seed: int = 5, first=date(2024, 1, 1)) -> None:
    """Daily Binance aggTrades zips with contiguous ids and some empty minutes."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    agg_id, price = 1_000_000, 42000.0
    for d in range(days):
        day = first + timedelta(days=d)
        start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)
        times = sorted(rng.randrange(start, start + 86_400_000) for _ in range(per_day))
        lines = []
        for t in times:
            price = round(price * (1 + rng.gauss(0, 3e-4)), 2)
            lines.append(
                f"{agg_id},{price:.2f},{rng.randint(1, 900) / 1000:.3f},{agg_id},{agg_id},{t},"
                f"{rng.choice(['True', 'False'])},True"
            )
            agg_id += 1
        name = f"BTCUSDT-aggTrades-{day.isoformat()}"
        with zipfile.ZipFile(folder / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{name}.csv", "\n".join(lines) + "\n")


def backfill(inputs: Path, out: Path, *extra):
    """A backfill of the daily zips in ``inputs`` into one-minute bars, gaps filled."""
    return run_backfill("binance-aggtrades", inputs / "*.zip", out, "--interval", "1m", "--fill-gaps", *extra)
