"""Pure rules: when the watchdog is armed and fed; how racing task writes combine."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from vigil.model import Task
from vigil.policy import tasks as TP
from vigil.policy.watchdog import watchdog_step


def test_a_fresh_boot_waits_unarmed_until_the_lease():
    assert watchdog_step(armed=False, holds_lease=False, runs_vms=False)[0] == "wait"
    assert watchdog_step(armed=False, holds_lease=True, runs_vms=False)[0] == "arm"


def test_running_vms_arm_at_once_even_without_a_lease():
    action, why = watchdog_step(armed=False, holds_lease=False, runs_vms=True)
    assert action == "arm" and "VMs" in why


@given(st.booleans(), st.booleans())
def test_an_armed_watchdog_is_always_fed(lease, vms):
    # armed by an earlier run of the agent, or by this one: never left to expire
    assert watchdog_step(armed=True, holds_lease=lease, runs_vms=vms)[0] == "feed"


def task(**kw) -> Task:
    return Task(id="t1", kind="migrate", vm="v", src="h1", dst="h2", **kw)


def apply(t: Task, change) -> Task:
    new = change(t)
    return t if new is None else new


FIGURES = {"downtime_ms": 12, "total_time_ms": 800}


def test_a_late_progress_report_never_overwrites_the_final_figures():
    t = apply(task(state="running"), TP.switched_over(FIGURES))
    late = apply(t, TP.with_progress({"transferred": 10}))
    assert late.progress["downtime_ms"] == 12 and late.state == "switching"


def test_the_figures_never_undo_done():
    done = task(state="done", progress={"transferred": 10})
    t = apply(done, TP.switched_over(FIGURES))
    assert t.state == "done" and t.progress["downtime_ms"] == 12


@given(st.permutations(["progress", "figures", "done"]))
def test_any_order_of_the_three_writes_ends_done_with_its_downtime(order):
    """The destination's "done" comes only after the figures, or it waits; whatever order
    the source's writes land in, a done migration carries its downtime."""
    t = task(state="running")
    pending_done = False
    for w in order:
        if w == "progress":
            t = apply(t, TP.with_progress({"transferred": 5}))
        elif w == "figures":
            t = apply(t, TP.switched_over(FIGURES))
        else:
            pending_done = True
        if pending_done and TP.finish_after_take_over(t, source_alive=True, waited_s=0.1)[0]:
            t, pending_done = replace(t, state="done"), False
    if pending_done:  # the figures came last: the destination finishes on its next look
        assert TP.finish_after_take_over(t, True, 0.2)[0]
        t = replace(t, state="done")
    assert t.state == "done" and t.progress["downtime_ms"] == 12


def test_the_destination_does_not_wait_for_a_dead_source_or_forever():
    t = task(state="switching")
    assert TP.finish_after_take_over(t, source_alive=True, waited_s=0.1) == (False, "waiting for the source's figures")
    assert TP.finish_after_take_over(t, source_alive=False, waited_s=0.1)[0]
    assert TP.finish_after_take_over(t, source_alive=True, waited_s=TP.FIGURES_WAIT_S)[0]


async def test_the_task_runner_writes_task_changes_to_the_store():
    """Through the runner's own helper, as the source and destination use it."""
    from types import SimpleNamespace

    from vigil.agent.tasks import TaskRunner
    from vigil.sim.clock import VirtualClock
    from vigil.sim.store import MemoryStore
    from vigil.store import keys as K

    clock = VirtualClock()
    store = MemoryStore(clock.monotonic)
    await store.put(K.TASKS + "v", {"id": "t1", "kind": "migrate", "vm": "v", "src": "h1", "dst": "h2",
                                    "state": "queued"})
    host = SimpleNamespace(store=store, env=SimpleNamespace(clock=clock))
    runner = TaskRunner(host)  # type: ignore[arg-type]
    t = await runner._update("v", "t1", state="preparing")
    assert t is not None and t.state == "preparing"
    assert (await store.get(K.TASKS + "v")).value["state"] == "preparing"
    t = await runner._update("v", "t1", TP.with_progress({"x": 1}))  # not running yet: left alone
    assert t is not None and t.progress == {}
