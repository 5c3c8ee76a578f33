"""A VM's QEMU as a process: where its files live, finding and ending it by pid."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from vigil.hypervisor.base import _opt

@dataclass(frozen=True)
class VMPaths:
    """Where one VM's runtime files live: ``run_dir/<vm>/``."""

    dir: Path

    @classmethod
    def for_vm(cls, run_dir: Path, vm: str) -> VMPaths:
        return cls(Path(run_dir) / vm)

    @property
    def qmp_sock(self) -> Path:
        return self.dir / "qmp.sock"

    @property
    def events_sock(self) -> Path:
        """A second QMP monitor, held by the agent's event watch (GUEST_PANICKED), so that
        the commands of others on ``qmp.sock`` never wait for it."""
        return self.dir / "events.sock"

    @property
    def hb_sock(self) -> Path:
        return self.dir / "hb.sock"

    @property
    def pidfile(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def serial_log(self) -> Path:
        return self.dir / "serial.log"

    @property
    def guest_log(self) -> Path:
        return self.dir / "guest.log"

    def net_sock(self, index: int) -> Path:
        """Where QEMU serves the frames of the VM's ``index``-th NIC (``-netdev stream``)."""
        return self.dir / f"net{index}.sock"


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    # state is the field after the ")" that closes comm
    return st[st.rindex(")") + 2 :][:1] not in ("Z", "X")


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(Path(pidfile).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def thread_files(pid: int, *names: str) -> list[tuple[str, ...]] | None:
    """Per thread of ``pid``, the text of its ``/proc/<pid>/task/<tid>/<name>`` files
    (``stat``, ``schedstat``, ``comm``...); a thread that ended meanwhile is left out.
    None when the process is gone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    out = []
    for tid in tids:
        try:
            out.append(tuple(Path(f"/proc/{pid}/task/{tid}/{n}").read_text() for n in names))
        except OSError:
            continue
    return out


def is_vm_process(pid: int, paths: VMPaths) -> bool:
    """The pid is alive and is the QEMU of this VM (guards against pid reuse)."""
    if not pid_alive(pid):
        return False
    argv = cmdline(pid)
    needle = _opt(paths.qmp_sock)
    if any(needle in arg for arg in argv):
        return True
    # a promoted FT standby was started in a standby dir and its files moved here
    return "-name" in argv[:-1] and argv[argv.index("-name") + 1].split(",")[0] == paths.dir.name \
        and any(str(paths.dir.parent / ".ft") in arg for arg in argv)


def find_running(run_dir: Path) -> dict[str, int]:
    """VM name -> pid of each QEMU still running under run_dir (for an agent to adopt)."""
    out: dict[str, int] = {}
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return out
    for d in sorted(run_dir.iterdir()):
        if not d.is_dir():
            continue
        paths = VMPaths(d)
        pid = read_pid(paths.pidfile)
        if pid and is_vm_process(pid, paths):
            out[d.name] = pid
    return out


async def wait_pid_exit(pid: int, timeout: float) -> bool:
    """Poll until the (non-child) process is gone; True if it went within timeout."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
