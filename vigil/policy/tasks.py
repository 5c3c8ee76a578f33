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
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from vigil.model import Task

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
