"""The in-process runner's direct batch grouping gives exactly what Beam's trigger driver gives."""

from __future__ import annotations

from apache_beam.transforms import trigger as triggers
from apache_beam.transforms import window as windows
from apache_beam.transforms.core import Windowing
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from hypothesis import given, settings
from hypothesis import strategies as st

from runners.batch_grouping import OnTimeBatchDriver, create_trigger_driver, fires_once_on_time
from transforms.bar_spec import BarSpec

window_fns = st.one_of(
    st.builds(windows.FixedWindows, st.integers(1, 600), st.integers(0, 59)),
    st.builds(
        lambda size, period: windows.SlidingWindows(size * period, period), st.integers(1, 4), st.integers(1, 300)
    ),
)
late_triggers = st.sampled_from([None, triggers.AfterCount(1), triggers.AfterCount(3)])


@st.composite
def windowings(draw):
    return Windowing(
        draw(window_fns),
        triggerfn=triggers.AfterWatermark(late=draw(late_triggers)),
        accumulation_mode=draw(
            st.sampled_from([triggers.AccumulationMode.ACCUMULATING, triggers.AccumulationMode.DISCARDING])
        ),
        allowed_lateness=Duration(seconds=draw(st.integers(0, 3600))),
    )


def grouped(driver, values):
    """The panes, in a fixed order: a PCollection has none."""
    return sorted(
        (
            (v.value[0], sorted(v.value[1]), v.timestamp, v.windows, v.pane_info)
            for v in driver.process_entire_key("key", values)
        ),
        key=lambda p: (p[3][0].start, p[3][0].end),
    )


@settings(max_examples=200, deadline=None)
@given(windowing=windowings(), stamps=st.lists(st.integers(-(10**9), 10**9), max_size=60))
def test_direct_batch_grouping_equals_beams_trigger_driver(windowing, stamps):
    values = [
        WindowedValue(
            i, Timestamp(micros=t), windowing.windowfn.assign(windows.WindowFn.AssignContext(Timestamp(micros=t)))
        )
        for i, t in enumerate(stamps)
    ]
    ours = create_trigger_driver(windowing, True)
    assert isinstance(ours, OnTimeBatchDriver)
    assert grouped(ours, values) == grouped(triggers.create_trigger_driver(windowing, True), values)


def test_the_bar_windowing_qualifies_and_others_go_to_beam():
    assert fires_once_on_time(BarSpec.of("1m", allowed_lateness_seconds=300).window_into().windowing)
    early = BarSpec.of("1m", early_firing_seconds=1).window_into().windowing
    assert not fires_once_on_time(early)
    assert not isinstance(create_trigger_driver(early, True), OnTimeBatchDriver)
    sessions = Windowing(
        windows.Sessions(60),
        triggerfn=triggers.AfterWatermark(),
        accumulation_mode=triggers.AccumulationMode.DISCARDING,
    )
    assert not isinstance(create_trigger_driver(sessions, True), OnTimeBatchDriver)
    assert not isinstance(create_trigger_driver(BarSpec.of("1m").window_into().windowing, False), OnTimeBatchDriver)
