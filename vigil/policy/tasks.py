"""How a task's record changes, as pure functions of the record as it is now.

Two agents write one migration's task: the source (progress, then the final figures) and
the destination (the take-over). Their writes race, so each is a function applied to the
task as read, inside a compare-and-swap (vigil.agent.tasks.update_task), and each is
written so that the order of landing does not matter:

- a progress report lands only while the task is running: a late one never overwrites
  the final figures (it used to: a migration recorded as done without its downtime);
- the source's final figures merge into the progress and never undo "done";
- the destination writes "done" once the figures are in, or once it has waited for them
  long enough (a source that died at the switchover writes none).

And what each end does next with a task (``source_step``, ``destination_step``,
``incoming_outcome``): admission within the per-host limits, cancels, timeouts, the
take-over; the agent (vigil.agent.tasks) carries the step out.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal, Sequence

from vigil.model import TASK_ACTIVE, Assignment, Task

# The destination waits at most this long after its take-over for the source's figures.
FIGURES_WAIT_S = 3.0
FINAL_FIGURE = "downtime_ms"  # present once the source recorded how the migration ended


def with_progress(progress: dict[str, Any]):  # type: ignore[no-untyped-def]
    """A progress report: only while the task runs, never over final figures."""
    def change(t: Task) -> Task | None:
        return replace(t, progress=progress) if t.state == "running" else None
    return change


def switched_over(figures: dict[str, Any]):  # type: ignore[no-untyped-def]
    """The source's last word: the memory is across; keeps "done" if the destination was first."""
    def change(t: Task) -> Task | None:
        if t.state not in ("running", "switching", "done"):
            return None
        return replace(t, state="done" if t.state == "done" else "switching",
                       progress={**t.progress, **figures})
    return change


def finish_after_take_over(t: Task, source_alive: bool, waited_s: float) -> tuple[bool, str]:
    """Whether the destination, which owns the VM now, writes "done" yet, and why."""
    if t.state == "done":
        return False, "already done"
    if FINAL_FIGURE in t.progress:
        return True, "the source recorded the migration's figures"
    if not source_alive:
        return True, "the source host is gone: no figures will come"
    if waited_s >= FIGURES_WAIT_S:
        return True, f"no figures from the source within {FIGURES_WAIT_S:.0f}s"
    return False, "waiting for the source's figures"


# -- what each end of a task does next ---------------------------------------------------
MAX_MIGRATIONS_PER_HOST = 8  # vSphere: 8 concurrent vMotions per host
MAX_DISK_MOVES_PER_HOST = 2  # vSphere: 2 concurrent Storage vMotions per host
MAX_DISK_REPAIRS_PER_HOST = 2  # offline copies of stale disk copies (vigil.policy.repair)
LIMITS = {"migrate": MAX_MIGRATIONS_PER_HOST, "move-disk": MAX_DISK_MOVES_PER_HOST,
          "repair-disk": MAX_DISK_REPAIRS_PER_HOST}
# A task the destination has not made ready by then is failed (the VM stays where it is).
PREPARE_TIMEOUT_S = 30.0

SourceStep = Literal["none", "cancel", "signal-cancel", "prepare-timeout", "admit", "drive", "orphaned"]


def source_step(t: Task, tasks: Sequence[Task], me: str, now: float, driving: bool,
                runs_here: bool) -> tuple[SourceStep, str]:
    """The source host's next step for its task ``t`` (for a repair-disk task: the host
    that copies): ``driving`` when this agent runs the task's migration, mirror or copy
    now; ``runs_here`` when the VM runs here. The reason of
    "cancel" and "prepare-timeout" is the error the task records."""
    if t.state not in TASK_ACTIVE:
        return "none", f"task {t.state}"
    if t.cancel and t.state in ("queued", "preparing", "ready") and not driving:
        return "cancel", "cancelled before it started"
    if driving:
        return ("signal-cancel", "cancel requested while it runs") if t.cancel else ("none", "under way")
    if t.state in ("preparing", "ready") and now - t.updated > PREPARE_TIMEOUT_S:
        return "prepare-timeout", f"the destination did not get ready within {PREPARE_TIMEOUT_S:.0f}s"
    if t.state == "queued":
        running = [x for x in tasks if x.src == me and x.kind == t.kind and x.state in TASK_ACTIVE
                   and x.state != "queued"]
        limit = LIMITS.get(t.kind, MAX_DISK_MOVES_PER_HOST)
        if len(running) >= limit:
            return "none", f"queued: {len(running)} of {limit} {t.kind} tasks run on {me}"
        return "admit", f"admitted ({len(running) + 1} of {limit} on {me})"
    if t.state == "ready" and t.kind == "migrate":
        return "drive", "the destination is ready: migrate"
    if t.state == "running" and (runs_here or t.kind == "repair-disk"):
        # (a repair is of a powered-off VM: it never runs here)
        return "orphaned", "running, but not driven by this agent run (it restarted)"
    return "none", "waiting for the other end"


FailedMigrationOutcome = Literal["runs-on", "restart-from-disk", "left"]


def after_failed_migration(postcopy: bool, status: str) -> tuple[FailedMigrationOutcome, str]:
    """What the source does with its copy once its migration failed. ``postcopy``: post-copy
    had been asked for; ``status``: the copy's run state ("unknown": QEMU did not answer).
    Only a copy that may have handed memory to the destination is ended for a restart from
    disk (the guest reboots): a QEMU that is slow to answer, or that was seen a moment
    before it resumed, runs a whole guest. A copy QEMU runs again holds the whole guest
    (QEMU resumes the source only while no page left it for good)."""
    if status.startswith("running"):
        return "runs-on", "the source's copy runs on"
    if postcopy:
        return "restart-from-disk", "post-copy had begun: part of the memory was on the destination"
    if status == "unknown":
        return "left", "pre-copy failed and QEMU does not answer: its process checks take it from here"
    return "restart-from-disk", f"pre-copy failed and the source's copy stays {status}"


Hands = tuple[str | None, str | None, int]  # a VM's owner, assigned host and assignment gen


def take_over_again(before: Hands, now: Hands) -> tuple[bool, str]:
    """Whether the destination tries its take-over again after losing the swap: only when
    the write it lost to left who runs the VM as it was (an edit of the VM's settings)."""
    if now == before:
        return True, "lost to a write that changed nothing of who runs the VM: again, on a fresh read"
    return False, f"the VM changed hands (owner, host, gen {before} -> {now})"


DestinationStep = Literal["none", "drop", "prepare", "finish", "follow"]


def destination_step(t: Task, me: str, incoming: str | None, runs_here: bool,
                     assignment: Assignment | None) -> tuple[DestinationStep, str]:
    """The destination host's next step for migration ``t``. ``incoming``: the task id of
    the QEMU this host started for the VM's migration, if any."""
    if t.state in ("failed", "cancelled", "done"):
        if incoming == t.id and t.state != "done":
            return "drop", f"migration {t.state}"
        return "none", f"task {t.state}"
    if t.state == "preparing" and incoming is None:
        return "prepare", "start the QEMU that receives the migration"
    if incoming is None:
        if (t.state in ("running", "switching") and runs_here and assignment is not None
                and assignment.host == me and assignment.reason == "migrate"):
            return "finish", "taken over, not yet done (this agent restarted, or etcd was away)"
        return "none", "no incoming QEMU here"
    return "follow", "the incoming QEMU receives the migration"


IncomingOutcome = Literal["failed", "take-over", "source-lost", "wait"]


def incoming_outcome(t: Task, qemu_alive: bool, status: str, source_alive: bool) -> tuple[IncomingOutcome, str]:
    """What becomes of the destination's QEMU of a migration under way. ``status``: its run
    state, and once it runs, the migration's ("running:completed" when the memory is all
    here); not asked when the QEMU is gone. The reason is the error the task records."""
    if not qemu_alive:
        if t.cancel and source_alive:
            # a cancelled incoming migration ends its QEMU: the source, which cancelled
            # it, records the outcome ("cancelled", or "done" if it finished first)
            return "wait", "the destination QEMU ended after the cancel; the source records it"
        return "failed", f"the destination QEMU on {t.dst} exited"
    if status == "running:completed":
        return "take-over", "the copy here runs with all its memory: own the VM now"
    if not source_alive:
        # The source is gone before the move finished (in post-copy, part of the memory
        # went with it): this copy cannot be completed; HA restarts the VM from disk.
        return "source-lost", f"source host {t.src} was lost"
    return "wait", f"incoming: {status}"
