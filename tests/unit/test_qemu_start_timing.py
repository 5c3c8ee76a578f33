"""vigil.hypervisor.start_timing: the agent's account of a QEMU start, read from /proc."""
from __future__ import annotations

import os
import time
from pathlib import Path

from vigil.hypervisor import start_timing


def test_thread_times_of_a_live_process_name_its_threads() -> None:
    times = start_timing.thread_times(os.getpid())
    assert times, "this process has at least its main thread"
    assert all(run >= 0 and wait >= 0 for run, wait in times.values())


def test_thread_times_of_a_gone_process_are_empty() -> None:
    assert start_timing.thread_times(2**22 + 12345) == {}


def test_phases_count_from_the_spawn(tmp_path: Path) -> None:
    pidfile = tmp_path / "qemu.pid"
    began = time.time()
    pidfile.write_text(f"{os.getpid()}\n")
    p = start_timing.phases(began, began + 0.002, began + 0.25, pidfile, os.getpid())
    assert p["spawned"] == 0.002 and p["up"] == 0.25
    assert 0 <= p["pidfile"] < 5  # type: ignore[operator]
    text = start_timing.describe(p)
    assert text.startswith("spawned 0.002s, pidfile ") and "up 0.25s" in text and " ran " in text


def test_phases_without_a_pidfile(tmp_path: Path) -> None:
    p = start_timing.phases(0.0, 0.1, 0.2, tmp_path / "none.pid", 2**22 + 12345)
    assert p["pidfile"] is None and p["threads"] == {}
