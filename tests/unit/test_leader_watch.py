"""The watching agent's test of the leader (vigil.policy.leader.watch_leader), which the
agent (vigil.agent.leader) and the simulator (vigil.sim.leader) both run."""
from __future__ import annotations

import pytest

from vigil.policy.heartbeats import PING_AFTER_S
from vigil.policy.leader import watch_leader

GRACE, PERIOD = 2.5, 0.5


def test_no_heartbeat_readable_asks_nothing():
    w = watch_leader("h2", None, GRACE, PERIOD)
    assert (w.probe, w.ask, w.next_check) == (False, False, PERIOD)


def test_a_fresh_heartbeat_is_looked_at_again_a_period_later():
    w = watch_leader("h2", PING_AFTER_S / 2, GRACE, PERIOD)
    assert (w.probe, w.ask, w.next_check) == (False, False, PERIOD)


@pytest.mark.parametrize("age", [PING_AFTER_S, 2.0, 2.3, GRACE - 0.01])
def test_a_late_heartbeat_is_pinged_in_the_background_and_looked_at_when_the_grace_ends(age):
    w = watch_leader("h2", age, GRACE, PERIOD)
    assert w.probe and not w.ask
    assert w.next_check == pytest.approx(min(PERIOD, max(0.05, GRACE - age + 0.02)))


@pytest.mark.parametrize("age", [GRACE, GRACE + 5])
def test_a_silent_leader_needs_a_ping_answer(age):
    w = watch_leader("h2", age, GRACE, PERIOD)
    assert w.probe and w.ask and w.next_check == PERIOD
