"""Write the bundled default data set: two days of XRPETH aggTrades in Binance's dump layout.

Synthetic but shaped like the real files of October 2019: no header, millisecond times,
8 columns, thin trading with empty minutes (so --fill-gaps has work to do), ids that run on
from one day's file to the next. Deterministic: re-running gives identical files.
"""

from __future__ import annotations

import io
import random
import zipfile
from datetime import datetime, timezone
from pathlib import Path

DAYS = ["2019-10-11", "2019-10-12"]
OUT = Path(__file__).resolve().parent.parent / "data"


def main() -> None:
    rng = random.Random(20191011)
    price = 0.00152300
    agg_id, trade_id = 3_400_000, 8_100_000
    OUT.mkdir(exist_ok=True)
    for day in DAYS:
        start_ms = int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp() * 1000)
        t, lines = start_ms, []
        while True:
            # Bursty arrivals: mostly seconds apart, sometimes minutes of silence.
            t += int(rng.expovariate(1 / 9000)) + (rng.random() < 0.03) * rng.randint(60_000, 400_000)
            if t >= start_ms + 86_400_000:
                break
            price = max(0.0009, price * (1 + rng.gauss(0, 0.0007)))
            price = round(price, 8)
            quantity = round(rng.lognormvariate(4.5, 1.3), 0) or 1.0
            fills = rng.choice([1, 1, 1, 2, 3])
            buyer_maker = rng.random() < 0.5
            lines.append(
                f"{agg_id},{price:.8f},{quantity:.8f},{trade_id},{trade_id + fills - 1},{t},"
                f"{'True' if buyer_maker else 'False'},True"
            )
            agg_id += 1
            trade_id += fills
        name = f"XRPETH-aggTrades-{day}"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            info = zipfile.ZipInfo(f"{name}.csv", date_time=(2019, 10, 13, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, "\n".join(lines) + "\n")
        (OUT / f"{name}.zip").write_bytes(buffer.getvalue())
        print(f"wrote {OUT / name}.zip: {len(lines)} aggTrades")


if __name__ == "__main__":
    main()
