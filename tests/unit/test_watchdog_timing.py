"""The inequality: a hung host is reset before the controller may restart its VMs."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import pytest

from vigil.model import HostState
from vigil.policy.hoststate import classify_host
from vigil.policy.view import HostView, Timing
from vigil.policy.watchdog import (MIN_MARGIN_S, MIN_TICKS, WatchdogTimingError, check_device_timeout,
                                   clean_stop_step, device_timeout, restart_after)

secs = st.floats(min_value=0.0, max_value=120.0, allow_nan=False)
timings = st.builds(Timing, lease_ttl=secs, hb_grace=secs, watchdog=secs, watchdog_margin=secs)
ticks = st.floats(min_value=0.01, max_value=10.0, allow_nan=False)


@given(timings, ticks)
def test_any_accepted_timings_keep_the_inequality(t, tick_s):
    try:
        d = device_timeout(t, tick_s)
    except WatchdogTimingError:
        return
    assert isinstance(d, int)
    assert d + t.watchdog_margin <= restart_after(t)  # reset (with its margin) before restart
    assert t.watchdog_margin >= MIN_MARGIN_S
    assert d >= 1 and d >= MIN_TICKS * tick_s  # a healthy host is never reset


@given(timings, ticks)
def test_the_controller_never_restarts_a_host_that_answers_ping_before_the_reset(t, tick_s):
    """classify_host agrees: below D + margin of silence a host that answers ping is not
    failed, whatever its lease."""
    try:
        d = device_timeout(t, tick_s)
    except WatchdogTimingError:
        return
    for alive in (False, True):
        h = HostView(name="h", info=None, alive=alive, hb_age=d + t.watchdog_margin - 1e-6, ping=True)
        assert classify_host(h, t)[0] is not HostState.FAILED


@given(timings, ticks)
def test_the_programmed_timeout_is_the_largest_that_fits(t, tick_s):
    try:
        d = device_timeout(t, tick_s)
    except WatchdogTimingError:
        return
    assert d + 1 + t.watchdog_margin > restart_after(t)


def test_the_default_timings():
    t = Timing()
    assert restart_after(t) == 6.5 and device_timeout(t, 0.5) == 5


def test_a_thin_margin_is_refused():
    with pytest.raises(WatchdogTimingError, match="margin"):
        device_timeout(Timing(watchdog_margin=0.5), 0.5)


def test_a_watchdog_shorter_than_two_ticks_is_refused():
    with pytest.raises(WatchdogTimingError, match="no missed tick"):
        device_timeout(Timing(watchdog=1.0), 1.0)


def test_a_device_that_rounded_up_is_refused():
    with pytest.raises(WatchdogTimingError, match="exceeds"):
        check_device_timeout(6, Timing(), 0.5)
    assert check_device_timeout(4, Timing(), 0.5) == 4


def test_a_long_heartbeat_grace_raises_the_bound():
    # the controller waits for hb_grace too: the watchdog may take up to hb_grace - margin
    assert device_timeout(Timing(hb_grace=10.0, watchdog=5.0), 0.5) == 8


def test_a_clean_stop_disarms_only_with_no_vm():
    assert clean_stop_step(runs_vms=False)[0] == "disarm"
    assert clean_stop_step(runs_vms=True)[0] == "leave-armed"
