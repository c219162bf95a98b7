"""Information bars (tick, volume, dollar) in ``cryptobeam stream``: where a restarted stream
resumes so that a day's bars can be rebuilt."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from io_connectors.kafka_progress import resume_point_us
from transforms.bar_kinds import Threshold
from transforms.bar_spec import BarSpec


def _micros(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()) * 1_000_000


def _utc_midnight_before(micros: int) -> int:
    """An independent reference: the calendar's midnight of the UTC date holding ``micros``."""
    day = datetime.fromtimestamp(micros // 1_000_000, timezone.utc).date()
    return _micros(day.isoformat())


TICKS = (Threshold("ticks", 500.0),)


@pytest.mark.parametrize("interval, at, boundary", [
    ("1m", "2024-01-01T13:47:31", "2024-01-01T13:47:00"),
    ("15m", "2024-01-01T00:14:59", "2024-01-01T00:00:00"),
    ("4h", "2024-03-05T23:59:59", "2024-03-05T20:00:00"),
    ("1w", "2024-01-10T08:00:00", "2024-01-08T00:00:00"),  # weeks start on Monday
])
def test_without_information_bars_the_resume_point_is_the_interval_boundary(interval, at, boundary):
    assert resume_point_us(_micros(at), BarSpec.of(interval)) == _micros(boundary)
    assert resume_point_us(_micros(at) + 1, BarSpec.of(interval, time_bars=False)) == _micros(boundary)


@pytest.mark.parametrize("interval, at", [
    ("1m", "2024-01-01T13:47:31"),
    ("1m", "2024-01-01T00:00:00"),  # a day start stays where it is
    ("1m", "2023-12-31T23:59:59"),  # a second before midnight is the day before
    ("15m", "2024-02-29T23:45:00"),
    ("4h", "2024-03-05T03:00:00"),
    ("1w", "2024-01-10T08:00:00"),  # the week's boundary is a Monday midnight already
])
def test_with_information_bars_the_resume_point_is_the_utc_day_start(interval, at):
    spec = BarSpec.of(interval, thresholds=TICKS)
    through = _micros(at) + 123
    expected = _utc_midnight_before(int(spec.interval.window_start_micros(through)))
    assert resume_point_us(through, spec) == expected
    assert resume_point_us(through, BarSpec.of(interval, time_bars=False, thresholds=TICKS)) == expected
    assert expected <= resume_point_us(through, BarSpec.of(interval)) < expected + 86_400_000_000
