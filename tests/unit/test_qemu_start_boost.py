"""vigil.hypervisor.start_boost: a starting QEMU's session gets a raised CPU share, and
every raised session is back at its starter's nice (0 for an agent) once the start is over."""
from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from vigil.hypervisor import start_boost as B


def session_nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


@pytest.fixture
def sessions():
    """Two sleeping processes, each in a session of its own (a QEMU's first process and its daemon)."""
    procs = [subprocess.Popen(["sleep", "30"], start_new_session=True) for _ in range(2)]
    yield [p.pid for p in procs]
    for p in procs:
        p.kill()
        p.wait()


def test_a_gone_process_cannot_be_raised() -> None:
    assert B.set_session_nice(2**22 + 12345, -5) is False


async def test_start_raises_first_then_daemon_and_ends_at_the_starters_nice(tmp_path: Path, sessions: list[int]) -> None:
    first, daemon = sessions
    if not B.set_session_nice(first, 0):
        pytest.skip("no autogroups here (or not allowed to set their nice)")
    pidfile = tmp_path / "qemu.pid"
    boost = B.StartBoost(pidfile, nice=-5)
    boost.began(first)
    assert session_nice(first) == -5
    await asyncio.sleep(0.02)
    pidfile.write_text(f"{daemon}\n")  # the daemon forked and wrote its pidfile
    for _ in range(100):
        if session_nice(daemon) == -5:
            break
        await asyncio.sleep(B.POLL_S)
    assert session_nice(daemon) == -5
    await boost.end()
    assert session_nice(first) == B.session_nice() and session_nice(daemon) == B.session_nice()


async def test_a_start_over_before_its_daemon_appeared(tmp_path: Path, sessions: list[int]) -> None:
    first, _ = sessions
    if not B.set_session_nice(first, 0):
        pytest.skip("no autogroups here (or not allowed to set their nice)")
    boost = B.StartBoost(tmp_path / "qemu.pid", nice=-5)
    boost.began(first)
    await boost.end()  # QEMU failed before it forked: the look for the pidfile ends too
    assert session_nice(first) == B.session_nice() and boost.raised == []


async def test_a_starter_at_a_low_priority_keeps_its_qemu_there(tmp_path: Path, sessions: list[int]) -> None:
    first, _ = sessions
    if not B.set_session_nice(first, 0):
        pytest.skip("no autogroups here (or not allowed to set their nice)")
    boost = B.StartBoost(tmp_path / "qemu.pid", nice=-5)
    boost.base = 19  # as read from a starter's own session at nice 19
    boost.began(first)
    await boost.end()
    assert session_nice(first) == 19


async def test_nice_zero_raises_nothing(tmp_path: Path, sessions: list[int]) -> None:
    boost = B.StartBoost(tmp_path / "qemu.pid", nice=0)
    boost.began(sessions[0])
    await boost.end()
    assert boost.raised == []
