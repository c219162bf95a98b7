"""A faster batch GroupByKey for the in-process runner, with the same output.

In batch, FnApiRunner groups every (key, window) through Beam's GeneralTriggerDriver, which
simulates the trigger state machine per window, the largest cost of a backfill of sparse
trades (43,200 one-minute windows per symbol-month). For the
windowings a batch run can only fire once per window (a non-merging WindowFn, an
``AfterWatermark`` trigger with no early firings, output at the end of the window), that
driver's result is known: one ON_TIME pane per window, index 0, holding the window's values
in arrival order, stamped with the window's max timestamp, and marked last when no late
trigger follows. ``OnTimeBatchDriver`` builds
exactly that directly. Every other windowing, and anything that is not a batch grouping,
goes to Beam's own driver unchanged; ``tests/test_batch_grouping.py`` checks the two agree.
"""

from __future__ import annotations

from apache_beam.runners.portability.fn_api_runner import execution
from apache_beam.transforms import trigger as triggers
from apache_beam.transforms.window import NonMergingWindowFn, TimestampCombiner
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming, WindowedValue

# The on-time pane is the last one exactly when no late firing can follow.
ON_TIME_PANES = {
    late: PaneInfo(is_first=True, is_last=late, timing=PaneInfoTiming.ON_TIME, index=0, nonspeculative_index=0)
    for late in (True, False)
}
_beams_driver = triggers.create_trigger_driver


class OnTimeBatchDriver(triggers.TriggerDriver):
    """One ON_TIME pane per window of a key, as GeneralTriggerDriver gives in batch."""

    def __init__(self, windowing, general: triggers.TriggerDriver):
        self._pane = ON_TIME_PANES[windowing.triggerfn.late is None]
        self._general = general  # for the incremental entry points, which batch grouping does not use

    def process_elements(self, *args, **kwargs):
        return self._general.process_elements(*args, **kwargs)

    def process_timer(self, *args, **kwargs):
        return self._general.process_timer(*args, **kwargs)

    def process_entire_key(self, key, windowed_values):
        by_window: dict = {}
        for windowed in windowed_values:
            for window in windowed.windows:
                by_window.setdefault(window, []).append(windowed.value)
        for window in by_window:  # a PCollection has no order; the runner's driver's order is not kept
            yield WindowedValue((key, by_window[window]), window.max_timestamp(), (window,), self._pane)


def fires_once_on_time(windowing) -> bool:
    trigger = windowing.triggerfn
    return (
        isinstance(windowing.windowfn, NonMergingWindowFn)
        and isinstance(trigger, triggers.AfterWatermark)
        and trigger.early is None
        and windowing.timestamp_combiner == TimestampCombiner.OUTPUT_AT_EOW
    )


def create_trigger_driver(windowing, is_batch=False, phased_combine_fn=None, clock=None):
    driver = _beams_driver(windowing, is_batch, phased_combine_fn, clock)
    if (
        is_batch
        and phased_combine_fn is None
        and clock is None
        and fires_once_on_time(windowing)
        and isinstance(driver, triggers.GeneralTriggerDriver)
    ):
        return OnTimeBatchDriver(windowing, driver)
    return driver


def install() -> None:
    """Use it for the in-process runner's batch groupings (idempotent)."""
    execution.trigger = _TriggerModule()


class _TriggerModule:
    """The runner's view of ``apache_beam.transforms.trigger``, with the driver factory above."""

    def __getattr__(self, name):
        if name == "create_trigger_driver":
            return create_trigger_driver
        return getattr(triggers, name)
