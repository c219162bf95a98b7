"""What ``--bars`` asks for: time bars of an interval (``time:1m``) and information-driven bars
of a threshold (``ticks:1000``, ``volume:50``, ``dollar:1e6``), each to its own table.

Beam- and numpy-free: the command line parses and plans with it before anything heavy loads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

KINDS = ("ticks", "volume", "dollar")
DAY_MICROS = 86_400_000_000
_SIZE = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


class BarsOptionError(ValueError):
    """A ``--bars`` value that names no known kind or gives no usable threshold."""


@dataclass(frozen=True)
class Threshold:
    kind: str
    size: float

    @property
    def text(self) -> str:
        """As the ``interval`` field of its bars names it, e.g. ``ticks:1000`` or ``dollar:1000000``."""
        size = int(self.size) if float(self.size).is_integer() else self.size
        return f"{self.kind}:{size}"

    @property
    def table(self) -> str:
        """The output table of these bars, beside the time bars' ``bars``."""
        return f"bars_{self.kind}"

    def measures(self, prices, amounts):
        """What each trade adds to its bar (numpy arrays); None for ticks, which count trades."""
        if self.kind == "volume":
            return amounts
        if self.kind == "dollar":
            return prices * amounts
        return None


def parse_threshold(kind: str, size_text: str) -> Threshold:
    if kind not in KINDS:
        raise BarsOptionError(f"unknown bar kind {kind!r}: use time, {', '.join(KINDS)}, consolidated, chain")
    if not _SIZE.match(size_text.strip()):
        raise BarsOptionError(f"bad {kind} bar size {size_text!r}: use a positive number, e.g. {kind}:1000")
    size = float(size_text)
    if not 0 < size < math.inf or (kind == "ticks" and not size.is_integer()):
        raise BarsOptionError(
            f"bad {kind} bar size {size_text!r}: it must be a positive "
            f"{'whole number' if kind == 'ticks' else 'finite number'}"
        )
    return Threshold(kind, size)


@dataclass(frozen=True)
class BarsRequest:
    """Every kind of bar one run builds: time bars of ``interval`` (when ``time_bars``), and one
    table of information bars per threshold. The interval is also the grain of the run's
    lateness and dedupe windows, so it is kept when time bars are not wanted."""

    interval: str = "1m"
    time_bars: bool = True
    thresholds: tuple[Threshold, ...] = ()
    consolidated: str | None = None
    """The window of consolidated bars across venues (``consolidated:1m``), or None."""
    chain: str | None = None
    """The window of the on-chain tables (``chain:1h``: token activity, exchange flows), or None."""


def parse_bars_options(values: list[str] | None, interval: str = "1m", interval_given: bool = True) -> BarsRequest:
    """``--bars`` values (repeatable) over the ``--interval`` default: ``time:1m``, ``ticks:1000``,
    ``volume:50``, ``dollar:1e6``, ``consolidated:1m``. No value means time bars of ``interval``, as
    before ``--bars``. Without time bars the run's interval is the consolidated bars' window when there are some."""
    if not values:
        return BarsRequest(interval)
    time_intervals, thresholds, consolidated, chain = [], [], [], []
    for value in values:
        kind, _, argument = value.partition(":")
        if not argument:
            raise BarsOptionError(
                f"bad --bars {value!r}: use KIND:SIZE, e.g. time:1m, ticks:1000, volume:50, dollar:1e6, consolidated:1m"
            )
        if kind == "time":
            time_intervals.append(argument)
        elif kind == "consolidated":
            consolidated.append(argument)
        elif kind == "chain":
            chain.append(argument)
        else:
            thresholds.append(parse_threshold(kind, argument))
    kinds = [t.kind for t in thresholds]
    repeated = sorted(
        {k for k in kinds if kinds.count(k) > 1}
        | ({"time"} if len(time_intervals) > 1 else set())
        | ({"consolidated"} if len(consolidated) > 1 else set())
        | ({"chain"} if len(chain) > 1 else set())
    )
    if repeated:
        raise BarsOptionError(
            f"--bars {repeated[0]} is given twice: each kind goes to one table (bars, bars_ticks, "
            "bars_volume, bars_dollar, bars_consolidated)"
        )
    if time_intervals and chain and time_intervals[0] != chain[0]:
        raise BarsOptionError(
            f"--bars time:{time_intervals[0]} and --bars chain:{chain[0]} disagree: on-chain tables share the "
            "run's windows with its time bars (a fusion joins them window by window); give one interval"
        )
    if time_intervals or chain:
        run_interval = (time_intervals or chain)[0]
    else:
        run_interval = interval if interval_given or not consolidated else consolidated[0]
    return BarsRequest(
        run_interval,
        bool(time_intervals),
        tuple(thresholds),
        consolidated[0] if consolidated else None,
        chain[0] if chain else None,
    )
