"""A host's own restarts of a crashed VM, before it hands the VM back to the controller.

A QEMU that exits on its own is restarted here, by the ordinary reconcile, as long as
its assignment generation has crashed fewer than ``LOCAL_RESTARTS`` times; then the host
reports it failed and lets go of its ownership, and the controller places it again with
a new generation (vSphere HA's restart attempts, first on the same host). A VM that
failed to start at all counts as having used up its restarts at once.
"""
from __future__ import annotations

from dataclasses import dataclass

LOCAL_RESTARTS = 3  # crashes of one assignment restarted here before the controller is asked


@dataclass(frozen=True)
class Crashes:
    """How often one assignment generation of a VM has failed on this host."""

    gen: int
    count: int
    message: str = ""

    @property
    def exhausted(self) -> bool:
        """No more restarts here for this generation: the controller retries elsewhere."""
        return self.count >= LOCAL_RESTARTS


@dataclass(frozen=True)
class ExitOutcome:
    """What the host reports once a QEMU exited: its new crash record, the state and
    message it writes to ``vmstatus/``, and whether it gives up the ownership key."""

    crashes: Crashes
    state: str  # "stopped": restarted here by the next reconcile | "failed": handed back
    message: str
    release: bool
    reason: str


def after_exit(gen: int, prev: Crashes | None) -> ExitOutcome:
    """The VM's QEMU (assignment ``gen``) exited by itself: count it, and decide."""
    count = prev.count + 1 if prev is not None and prev.gen == gen else 1
    crashes = Crashes(gen, count, "QEMU exited")
    if crashes.exhausted:
        return ExitOutcome(crashes, "failed", f"QEMU exited {count} times", True,
                           f"crash {count} of gen {gen}: restarts here used up, handed back to the controller")
    return ExitOutcome(crashes, "stopped", "QEMU exited", False,
                       f"crash {count} of gen {gen}: restarted here by the next reconcile")


def start_failed(gen: int, error: str) -> Crashes:
    """QEMU did not start at all: no restart here for this generation."""
    return Crashes(gen, LOCAL_RESTARTS, error)


def may_start(gen: int, prev: Crashes | None) -> bool:
    """Whether assignment ``gen`` may be started here again after its crashes."""
    return prev is None or prev.gen != gen or not prev.exhausted
