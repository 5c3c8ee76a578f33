"""The host's watchdog as the agent sees it: armed or not, and fed.

In the lab the device is a file that the host's supervisor watches (vigil.lab.supervisor):
the first write after a boot arms it, and it resets the host when the file's mtime is
older than the timeout; the supervisor removes the file at each boot, so "the file
exists" means "armed since this boot", by this agent or by an earlier run of it. When
and why the agent arms and feeds it is decided by vigil.policy.watchdog.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from vigil.policy.watchdog import watchdog_step

log = logging.getLogger("vigil.agent.watchdog")


class FileWatchdog:
    """A watchdog device played by a file; with no path, a host without a watchdog."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self.reason = ""

    @property
    def armed(self) -> bool:
        return self.path is not None and self.path.exists()

    def feed(self) -> None:
        if self.path is None:
            return
        try:
            self.path.write_text(f"{time.time()}\n")
        except OSError as e:
            log.error("watchdog %s: %s", self.path, e)

    def tick(self, holds_lease: bool, runs_vms: bool) -> None:
        """Arm or feed, as the policy says; logs each change of reason."""
        if self.path is None:
            return
        action, why = watchdog_step(self.armed, holds_lease, runs_vms)
        if why != self.reason:
            log.info("watchdog: %s", why)
            self.reason = why
        if action in ("arm", "feed"):
            self.feed()
