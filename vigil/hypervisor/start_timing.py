"""Where a QEMU start's time went, for the agent's log: the failover's "restart issued ->
QEMU started" is mostly QEMU's own start, and on a loaded host most of that is waiting for
a CPU, not work. Read from /proc and the pidfile right after the start; no subprocess.

Phases, from the agent's spawn (``began``): ``spawned`` (the fork and exec returned to the
agent), ``pidfile`` (the QEMU daemon wrote its pidfile: the first QEMU process linked,
parsed its command line and forked the daemon), ``up`` (the first QEMU process exited and
the agent saw it: the daemon initialised the machine). Per thread of the daemon so far:
the CPU time it ran and the time it waited runnable for a CPU (``/proc/.../schedstat``).
"""
from __future__ import annotations

from pathlib import Path

from vigil.hypervisor.processes import thread_files


def thread_times(pid: int) -> dict[str, tuple[float, float]]:
    """Thread name -> (seconds run, seconds waited runnable), summed over threads of one name."""
    out: dict[str, tuple[float, float]] = {}
    for schedstat, comm in thread_files(pid, "schedstat", "comm") or []:
        try:
            run_ns, wait_ns, _ = schedstat.split()
        except ValueError:
            continue
        name = comm.strip()
        run, wait = out.get(name, (0.0, 0.0))
        out[name] = (run + int(run_ns) / 1e9, wait + int(wait_ns) / 1e9)
    return out


def phases(began: float, spawned: float, up: float, pidfile: Path, pid: int) -> dict[str, object]:
    """The phases of one start (wall-clock times, ``time.time()``), in seconds from ``began``."""
    try:
        written = Path(pidfile).stat().st_mtime_ns / 1e9 - began
    except OSError:
        written = None
    return {
        "spawned": round(spawned - began, 3),
        "pidfile": round(written, 3) if written is not None else None,
        "up": round(up - began, 3),
        "threads": {k: (round(r, 3), round(w, 3)) for k, (r, w) in thread_times(pid).items()},
    }


def describe(p: dict[str, object]) -> str:
    threads = p.get("threads") or {}
    assert isinstance(threads, dict)
    per = ", ".join(f"{k} ran {r:.3f}s waited {w:.3f}s" for k, (r, w) in sorted(threads.items()))
    return (f"spawned {p.get('spawned')}s, pidfile {p.get('pidfile')}s, up {p.get('up')}s; "
            f"daemon threads: {per}")
