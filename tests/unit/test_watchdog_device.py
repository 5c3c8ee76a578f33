"""The watchdog drivers against a recorder of the system calls: no real device is opened."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from vigil.agent import watchdog as W
from vigil.config import AgentConfig
from vigil.policy.view import Timing
from vigil.policy.watchdog import WatchdogTimingError


class Recorder:
    """Plays /dev/watchdog: records each call; takes the timeout it is asked for, or
    ``takes`` (a device that rounds)."""

    def __init__(self, takes: int | None = None, fail_open: bool = False) -> None:
        self.calls: list[tuple] = []
        self.timeout = 0
        self.takes = takes
        self.fail_open = fail_open

    def open(self, path: str) -> int:
        self.calls.append(("open", path))
        if self.fail_open:
            raise OSError(16, "Device or resource busy")
        return 7

    def ioctl(self, fd: int, request: int, arg: bytearray) -> None:
        name = {W.WDIOC_SETTIMEOUT: "settimeout", W.WDIOC_GETTIMEOUT: "gettimeout",
                W.WDIOC_KEEPALIVE: "keepalive"}[request]
        if request == W.WDIOC_SETTIMEOUT:
            asked = struct.unpack("i", arg)[0]
            self.timeout = asked if self.takes is None else self.takes
            arg[:] = struct.pack("i", self.timeout)
            self.calls.append((name, asked))
            return
        if request == W.WDIOC_GETTIMEOUT:
            arg[:] = struct.pack("i", self.timeout)
        self.calls.append((name,))

    def write(self, fd: int, data: bytes) -> None:
        self.calls.append(("write", data))

    def close(self, fd: int) -> None:
        self.calls.append(("close",))


def cfg(tmp_path: Path, **kw) -> AgentConfig:
    base = dict(host="h1", address="10.0.0.1", etcd_endpoints=("10.0.0.1:2379",), run_dir=str(tmp_path),
                datastores={}, watchdog_device="/dev/watchdog0")
    return AgentConfig(**{**base, **kw})


def device(tmp_path: Path, rec: Recorder, **kw) -> W.DeviceWatchdog:
    wd = W.make_watchdog(cfg(tmp_path, **kw), ops=rec)
    assert isinstance(wd, W.DeviceWatchdog)
    return wd


def test_the_ioctl_numbers_are_linux_watchdog_h():
    # _IOC(dir, 'W', nr, sizeof(int)): read = 2, read|write = 3
    ioc = lambda d, nr: (d << 30) | (4 << 16) | (ord("W") << 8) | nr  # noqa: E731
    assert (W.WDIOC_KEEPALIVE, W.WDIOC_SETTIMEOUT, W.WDIOC_GETTIMEOUT) == (ioc(2, 5), ioc(3, 6), ioc(2, 7))


def test_the_config_picks_the_driver(tmp_path):
    assert isinstance(W.make_watchdog(cfg(tmp_path), ops=Recorder()), W.DeviceWatchdog)
    lab = W.make_watchdog(cfg(tmp_path, watchdog_device="", watchdog_file=str(tmp_path / "wd")))
    assert isinstance(lab, W.FileWatchdog)
    assert isinstance(W.make_watchdog(cfg(tmp_path, watchdog_device="")), W.NoWatchdog)


def test_nothing_is_opened_until_the_policy_arms_it(tmp_path):
    rec = Recorder()
    wd = device(tmp_path, rec)
    wd.tick(holds_lease=False, runs_vms=False)
    assert rec.calls == [] and not wd.armed


def test_arm_feed_and_a_clean_stop_with_no_vm(tmp_path):
    rec = Recorder()
    wd = device(tmp_path, rec)
    for _ in range(3):
        wd.tick(holds_lease=True, runs_vms=False)
    wd.close_clean(runs_vms=False)
    assert rec.calls == [("open", "/dev/watchdog0"), ("settimeout", 5), ("gettimeout",), ("keepalive",),
                         ("keepalive",), ("keepalive",), ("write", b"V"), ("close",)]
    assert not wd.armed  # the marker is gone with the device disarmed


def test_a_crash_never_writes_the_magic_character(tmp_path):
    """The agent dies: close_clean is never called, the process's fd is closed by the
    kernel without 'V', and the device resets the host."""
    rec = Recorder()
    wd = device(tmp_path, rec)
    wd.tick(holds_lease=True, runs_vms=True)
    wd.tick(holds_lease=False, runs_vms=True)  # lease lost: still fed
    assert ("write", b"V") not in rec.calls and ("close",) not in rec.calls
    assert [c[0] for c in rec.calls].count("keepalive") == 2


def test_a_clean_stop_with_vms_leaves_the_device_armed_for_the_next_run(tmp_path):
    rec = Recorder()
    wd = device(tmp_path, rec)
    wd.tick(holds_lease=True, runs_vms=True)
    wd.close_clean(runs_vms=True)
    assert rec.calls[-1] == ("close",) and ("write", b"V") not in rec.calls
    # the next run of the agent sees the marker and takes the device over at its first tick,
    # before it holds a lease
    rec2 = Recorder()
    nxt = device(tmp_path, rec2)
    assert nxt.armed
    nxt.tick(holds_lease=False, runs_vms=False)
    assert [c[0] for c in rec2.calls] == ["open", "settimeout", "gettimeout", "keepalive"]


def test_a_busy_device_is_retried_and_logged_once(tmp_path, caplog):
    rec = Recorder(fail_open=True)
    wd = device(tmp_path, rec)
    for _ in range(3):
        wd.tick(holds_lease=True, runs_vms=False)
    assert [c[0] for c in rec.calls] == ["open"] * 3
    assert sum("cannot open" in r.message for r in caplog.records) == 1


def test_a_device_that_took_a_longer_timeout_stays_armed_and_says_so(tmp_path, caplog):
    rec = Recorder(takes=10)
    wd = device(tmp_path, rec)
    wd.tick(holds_lease=True, runs_vms=False)
    assert rec.calls[-1] == ("keepalive",) and wd.armed  # a late reset beats none
    assert any(r.levelname == "CRITICAL" and "exceeds" in r.message for r in caplog.records)


def test_timings_that_break_the_bound_are_refused_before_any_device_is_touched(tmp_path):
    rec = Recorder()
    with pytest.raises(WatchdogTimingError, match="no missed tick"):
        W.make_watchdog(cfg(tmp_path, watchdog_s=0.5, hb_grace_s=0.5), ops=rec)
    assert rec.calls == []


def test_the_lab_file_watchdog_is_unchanged(tmp_path):
    f = tmp_path / "wd"
    wd = W.FileWatchdog(str(f))
    wd.tick(holds_lease=False, runs_vms=False)
    assert not f.exists()
    wd.tick(holds_lease=True, runs_vms=False)
    assert f.exists() and wd.armed
    wd.close_clean(runs_vms=False)  # the lab's supervisor has no magic close
    assert f.exists()


def test_the_programmed_timeout_with_the_lab_timings():
    assert W.device_timeout(Timing(hb_grace=2.5, watchdog=5.0), 0.5) == 5
