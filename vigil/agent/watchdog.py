"""The host's watchdog as the agent sees it: armed or not, fed, and closed on a clean stop.

Two devices behind one interface (arm, feed, close_clean; ``tick`` applies the policy):

- ``DeviceWatchdog``: the Linux watchdog API on /dev/watchdog (or /dev/watchdogN). Opening
  the device starts its timer; ``WDIOC_SETTIMEOUT`` programs the timeout that
  vigil.policy.watchdog.device_timeout computes from the cluster's timings, and the device
  reports the one it took (checked again: a device may round); each tick sends
  ``WDIOC_KEEPALIVE``. Only a clean stop with no VM here writes the magic 'V' before
  closing (which disarms it); if the agent dies, the device stays armed and resets the host.
  A marker file in the run directory (under /run: gone at each boot) says "armed since this
  boot", so a restarted agent feeds at once what the previous run left armed.
- ``FileWatchdog``: the lab's stand-in, a file the host's supervisor watches
  (vigil.lab.supervisor): the first write after a boot arms it, and it resets the host when
  the file's mtime is older than the timeout; the supervisor removes the file at each boot,
  so "the file exists" means "armed since this boot". It has no magic close.

When and why the agent arms and feeds is decided by vigil.policy.watchdog; ``make_watchdog``
picks the device from the agent's config. Every call here runs in the heartbeat loop and
never raises; ``make_watchdog`` refuses timings that break the inequality (WatchdogTimingError).
"""
from __future__ import annotations

import fcntl
import logging
import os
import struct
from pathlib import Path
from typing import Protocol

from vigil.config import AgentConfig
from vigil.policy.view import Timing
from vigil.policy.watchdog import (WatchdogTimingError, check_device_timeout, clean_stop_step,
                                   device_timeout, watchdog_step)

log = logging.getLogger("vigil.agent.watchdog")

# <linux/watchdog.h>: _IOR('W', 5, int), _IOWR('W', 6, int), _IOR('W', 7, int)
WDIOC_KEEPALIVE = 0x80045705
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_GETTIMEOUT = 0x80045707
MAGIC_CLOSE = b"V"
ARMED_MARKER = "watchdog.armed"

__all__ = ["DeviceOps", "DeviceWatchdog", "FileWatchdog", "LinuxOps", "NoWatchdog", "Watchdog",
           "WatchdogTimingError", "make_watchdog"]


class Watchdog:
    """What the heartbeat loop holds: ``tick`` arms or feeds as the policy says."""

    reason = ""

    @property
    def armed(self) -> bool:
        return False

    def arm(self) -> None:
        self.feed()

    def feed(self) -> None:
        pass

    def close_clean(self, runs_vms: bool) -> None:
        """The agent stops cleanly (never called when it dies)."""

    def tick(self, holds_lease: bool, runs_vms: bool) -> None:
        """Arm or feed, as the policy says; logs each change of reason."""
        action, why = watchdog_step(self.armed, holds_lease, runs_vms)
        if why != self.reason:
            log.info("watchdog: %s", why)
            self.reason = why
        if action == "arm":
            self.arm()
        elif action == "feed":
            self.feed()


class NoWatchdog(Watchdog):
    """A host without a watchdog: nothing resets it if its agent hangs."""

    def tick(self, holds_lease: bool, runs_vms: bool) -> None:
        pass


class FileWatchdog(Watchdog):
    """A watchdog device played by a file (the lab's); with no path, no watchdog."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self.feeds = 0  # the stand-in reads the file's mtime; the content only counts

    @property
    def armed(self) -> bool:
        return self.path is not None and self.path.exists()

    def feed(self) -> None:
        if self.path is None:
            return
        try:
            self.feeds += 1
            self.path.write_text(f"{self.feeds}\n")
        except OSError as e:
            log.error("watchdog %s: %s", self.path, e)

    def tick(self, holds_lease: bool, runs_vms: bool) -> None:
        if self.path is not None:
            super().tick(holds_lease, runs_vms)


class DeviceOps(Protocol):
    """The system calls the device driver makes (tests pass a recorder)."""

    def open(self, path: str) -> int: ...
    def ioctl(self, fd: int, request: int, arg: bytearray) -> None: ...
    def write(self, fd: int, data: bytes) -> None: ...
    def close(self, fd: int) -> None: ...


class LinuxOps:
    """The real calls. Close-on-exec: a QEMU the agent starts must never hold the device."""

    def open(self, path: str) -> int:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC)

    def ioctl(self, fd: int, request: int, arg: bytearray) -> None:
        fcntl.ioctl(fd, request, arg, True)

    def write(self, fd: int, data: bytes) -> None:
        os.write(fd, data)

    def close(self, fd: int) -> None:
        os.close(fd)


class DeviceWatchdog(Watchdog):
    """The Linux watchdog API; ``timeout`` from vigil.policy.watchdog.device_timeout."""

    def __init__(self, device: str, timeout: int, timing: Timing, tick_s: float, marker: Path,
                 ops: DeviceOps | None = None) -> None:
        self.device = device
        self.timeout = timeout
        self.timing = timing
        self.tick_s = tick_s
        self.marker = marker
        self.ops: DeviceOps = ops if ops is not None else LinuxOps()
        self.fd: int | None = None
        self.last_error = ""

    @property
    def armed(self) -> bool:
        return self.fd is not None or self.marker.exists()

    def arm(self) -> None:
        """Open the device (its timer starts), program the timeout and check the one it
        took. A device that took another one stays armed and fed (a late reset still
        beats none) and the broken bound is logged as critical."""
        if self.fd is not None:
            return
        try:
            self.fd = self.ops.open(self.device)
        except OSError as e:
            self._error(f"cannot open: {e}")
            return
        arg = bytearray(struct.pack("i", self.timeout))
        try:
            self.ops.ioctl(self.fd, WDIOC_SETTIMEOUT, arg)
            self.ops.ioctl(self.fd, WDIOC_GETTIMEOUT, arg)
            took = struct.unpack("i", arg)[0]
            check_device_timeout(took, self.timing, self.tick_s)
        except OSError as e:
            self._error(f"cannot program timeout {self.timeout}s: {e}", critical=True)
        except WatchdogTimingError as e:
            self._error(f"took timeout {took}s: {e}", critical=True)
        else:
            log.info("watchdog %s armed, timeout %ds", self.device, took)
        try:
            self.marker.write_text(f"{self.device}\n")
        except OSError as e:
            log.error("watchdog marker %s: %s", self.marker, e)
        self.feed()

    def _error(self, msg: str, critical: bool = False) -> None:
        """Log once per distinct error (the heartbeat loop retries every tick)."""
        if msg != self.last_error:
            (log.critical if critical else log.error)("watchdog %s: %s", self.device, msg)
            self.last_error = msg

    def feed(self) -> None:
        if self.fd is None:
            self.arm()  # armed by an earlier run of the agent: take it over at once
            return
        try:
            self.ops.ioctl(self.fd, WDIOC_KEEPALIVE, bytearray(4))
        except OSError as e:
            self._error(f"keepalive: {e}")

    def close_clean(self, runs_vms: bool) -> None:
        if self.fd is None:
            return
        action, why = clean_stop_step(runs_vms)
        log.info("watchdog %s: %s", self.device, why)
        if action == "disarm":
            try:
                self.marker.unlink()
            except OSError:
                pass
        self._close(magic=action == "disarm")

    def _close(self, magic: bool) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            if magic:
                self.ops.write(fd, MAGIC_CLOSE)
        except OSError as e:
            log.error("watchdog %s: magic close: %s", self.device, e)
        finally:
            self.ops.close(fd)


def make_watchdog(cfg: AgentConfig, ops: DeviceOps | None = None) -> Watchdog:
    """The device the config names: ``watchdog_device``, else the lab's ``watchdog_file``,
    else none. For a device the timings are checked first (WatchdogTimingError)."""
    if cfg.watchdog_device:
        timing = cfg.timing()
        timeout = device_timeout(timing, cfg.tick_s)
        return DeviceWatchdog(cfg.watchdog_device, timeout, timing, cfg.tick_s,
                              Path(cfg.run_dir) / ARMED_MARKER, ops)
    if cfg.watchdog_file:
        return FileWatchdog(cfg.watchdog_file)
    return NoWatchdog()
