"""A QEMU's CPU share while it starts: raised from its fork until it is up, then normal.

With the kernel's autogroups (``/proc/sys/kernel/sched_autogroup_enabled``) the CPU is
shared between sessions first, and a QEMU daemon is a session of its own: on a loaded host
(other guests booting under TCG, etcd, the agent itself, all busy when VMs restart) its
start, a few tens of milliseconds of CPU, waits several times that for a CPU. Its
session's nice (``/proc/<pid>/autogroup``) is raised for the start only and set back to
its starter's own session nice (0 for an agent) when QEMU is up (or when it failed: the
session goes away with it), so a VM never runs on a raised share. Where autogroups are off
or the file cannot be written, nothing changes.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from vigil.hypervisor.processes import read_pid

log = logging.getLogger("vigil.hypervisor")

START_NICE = -10  # the session's nice while QEMU starts: about 9 times the share of a nice 0 one
POLL_S = 0.005    # how often the daemon's pidfile is looked for


def session_nice(pid: int | str = "self") -> int:
    """The nice of the autogroup (session) of ``pid`` ("/autogroup-N nice K"); 0 where
    there is none to read."""
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return 0


def set_session_nice(pid: int, nice: int) -> bool:
    """Set the nice of the autogroup (session) of ``pid``; False where that cannot be done."""
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(nice))
        return True
    except OSError:
        return False


class StartBoost:
    """Raise the share of each process of a start as it appears: the first QEMU process
    (``first``, in a session of its own) and the daemon once its pidfile names it."""

    def __init__(self, pidfile: Path, nice: int | None = None) -> None:
        self.pidfile = Path(pidfile)
        self.nice = START_NICE if nice is None else nice
        self.base = session_nice()  # what the starter runs at: 0 for an agent
        self.raised: list[int] = []
        self._task: asyncio.Task[None] | None = None

    def began(self, first: int) -> None:
        if self.nice != 0 and set_session_nice(first, self.nice):
            self.raised.append(first)
            self._task = asyncio.get_running_loop().create_task(self._daemon())

    async def _daemon(self) -> None:
        while (pid := read_pid(self.pidfile)) is None:
            await asyncio.sleep(POLL_S)
        if set_session_nice(pid, self.nice):
            self.raised.append(pid)

    async def end(self) -> None:
        """QEMU is up or gone: every raised session back to its starter's nice (0 for an
        agent; a starter run at a low priority, as a benchmark or test run niced, keeps its
        QEMUs there)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for p in self.raised:
            set_session_nice(p, self.base)
        self.raised.clear()
