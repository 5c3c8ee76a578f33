"""Shared helpers of the lab tests."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

import pytest

# The marks of every test that runs the whole lab.
LAB_MARKS = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64") or not shutil.which("etcd"),
                       reason="needs root, QEMU and etcd (make test installs them)"),
]


class Timeline:
    """When each step of a `lab up` began (its progress messages): where a lab's seconds go."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.steps: list[tuple[float, str]] = [(self.t0, "start")]

    def note(self, message: str) -> None:
        self.steps.append((time.monotonic(), message))

    def summary(self, what: str) -> str:
        """``what`` in N s, then each step that took 0.5 s or more (its first words)."""
        ends = [t for t, _ in self.steps[1:]] + [time.monotonic()]
        slow = [f"{' '.join(m.split()[:4])} {e - t:.1f}" for (t, m), e in zip(self.steps, ends) if e - t >= 0.5]
        return f"{what} in {time.monotonic() - self.t0:.1f} s" + (f" ({'; '.join(slow)})" if slow else "")


@contextlib.contextmanager
def running_lab(**config: Any) -> Iterator[Any]:
    """A lab of ``LabConfig(**config)``, ready (leases and a leader), torn down at the end.
    How long its steps took is printed (pytest shows it with a failure, or with -rP)."""
    from vigil.lab.lab import Lab, LabConfig
    from vigil.lab.scenario import wait_cluster_ready

    timeline = Timeline()
    lab = Lab(progress=timeline.note)
    lab.up(LabConfig(**config))
    try:
        timeline.note("waiting for leases and a leader")
        wait_cluster_ready(config.get("hosts", 3), timeout=120)
        print(timeline.summary(f"lab {config} up"))
        yield lab
    finally:
        timeline = Timeline()
        lab.progress = timeline.note
        lab.down()
        print(timeline.summary("lab down"))


def kinds_since(t0: float, kind: str) -> list:
    """The events of ``kind`` since ``t0``."""
    from vigil.lab import observe

    return [e for e in observe.events() if e.time >= t0 and e.kind == kind]


def vigil_cmd() -> list[str]:
    """The ``vigil`` of this virtual environment."""
    return [shutil.which("vigil") or os.path.join(os.path.dirname(sys.executable), "vigil")]


def assert_refused(bad: list[tuple[list[str], str]], desired: Callable[[], dict]) -> None:
    """Each command fails with exit 1 and its message, no traceback, and ``desired()``
    (the etcd state it must not touch) is the same afterwards."""
    before = desired()
    for argv, message in bad:
        r = subprocess.run(vigil_cmd() + argv, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, (argv, r.stdout, r.stderr)
        assert message in r.stderr.replace("\n", " "), (argv, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout
    assert desired() == before
