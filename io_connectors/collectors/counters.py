"""What a collector did, counted: the summary table at the end and the periodic progress lines.

Every trade is accounted for: ``received + gap_trades_fetched == published + duplicates``.
Each feed counts its own; ``total`` adds them up for a run of several feeds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class CollectorCounters:
    frames: int = 0
    received: int = 0  # trades in websocket frames
    published: int = 0
    duplicates: int = 0  # seen before, so not published again
    gaps_detected: int = 0
    gap_trades_fetched: int = 0  # missed trades fetched over REST
    gaps_unfilled: int = 0  # gaps REST could not (fully) fill
    trades_unfilled: int = 0  # ids in those gaps that are still missing
    malformed: int = 0  # frames that became dead letters
    reconnects: int = 0
    stale_reconnects: int = 0  # of which forced by the staleness watchdog
    connect_failures: int = 0
    rest_retries: int = 0
    status_records: int = 0  # feed_status records published, one per symbol and change
    undelivered: int = 0  # messages Kafka did not acknowledge by shutdown

    LABELS = {
        "frames": "websocket frames",
        "received": "trades received",
        "published": "trades published",
        "duplicates": "duplicates dropped",
        "gaps_detected": "gaps detected",
        "gap_trades_fetched": "gap trades fetched (REST)",
        "gaps_unfilled": "gaps left unfilled",
        "trades_unfilled": "trades still missing",
        "malformed": "malformed frames (dead-lettered)",
        "reconnects": "reconnects",
        "stale_reconnects": "  of which stale (watchdog)",
        "connect_failures": "failed connection attempts",
        "rest_retries": "REST retries",
        "status_records": "feed status records",
        "undelivered": "undelivered to Kafka",
    }

    @classmethod
    def total(cls, counters: list["CollectorCounters"]) -> "CollectorCounters":
        return cls(**{f.name: sum(getattr(c, f.name) for c in counters) for f in fields(cls)})

    def rows(self) -> list[tuple[str, int]]:
        return [(self.LABELS[f.name], getattr(self, f.name)) for f in fields(self)]

    def progress_line(self) -> str:
        return (
            f"received {self.received:,}, published {self.published:,}, duplicates {self.duplicates:,}, "
            f"gaps {self.gaps_detected:,} ({self.gap_trades_fetched:,} fetched, {self.trades_unfilled:,} missing), "
            f"malformed {self.malformed:,}, reconnects {self.reconnects:,}"
        )
