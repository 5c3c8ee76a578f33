"""Each lab host's processes: its supervisor (which boots etcd and the agent), their pids
and their logs."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from .lab_state import LabState
from .layout import (AGENT_LOG, ETCD_LOG, HOSTS_DIR, STATE_FILE, SUPERVISOR_LOG, SUPERVISOR_STATUS,
                     LabError, host_dir, host_exec_argv, netns_path, pid_alive, pids_in_ns, wait_for)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class HostProcesses(LabState):
    """The per-host supervisors, etcd and agent processes of the lab."""

    def supervisor_status(self, host: str) -> dict:
        """The supervisor's own status file (may be stale if it died: check pids)."""
        try:
            return json.loads((host_dir(host) / SUPERVISOR_STATUS).read_text())
        except (OSError, ValueError):
            return {}

    def supervisor_pid(self, host: str) -> int | None:
        pid = self.host(host).get("supervisor_pid") or self.supervisor_status(host).get("pid")
        return pid if pid_alive(pid) else None

    def host_pids(self, host: str) -> list[int]:
        """Every process in the host's network namespace (like `ip netns pids`)."""
        return pids_in_ns(netns_path(host))

    def _pid_of(self, host: str, key: str) -> int | None:
        pid = self.supervisor_status(host).get(key)
        if pid and pid_alive(pid) and pid in self.host_pids(host):
            return pid
        return None

    def agent_pid(self, host: str) -> int | None:
        return self._pid_of(host, "agent_pid")

    def etcd_pid(self, host: str) -> int | None:
        return self._pid_of(host, "etcd_pid")

    def api_pid(self, host: str) -> int | None:
        return self._pid_of(host, "api_pid")

    # --- supervisors -------------------------------------------------------------------
    def _spawn_supervisor(self, host: str) -> None:
        d = host_dir(host)
        d.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (d / SUPERVISOR_STATUS).unlink()
        import vigil
        pkg_root = str(Path(vigil.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        argv = ["setsid", "-f", *host_exec_argv(host, [
            sys.executable, "-m", "vigil.lab.supervisor", "--host", host, "--state", str(STATE_FILE)])]
        with open(d / SUPERVISOR_LOG, "ab") as out:
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd="/",
                           env=env, check=True, timeout=30)

    def _wait_supervisor(self, host: str, timeout: float = 15.0) -> int:
        def started():
            pid = self.supervisor_status(host).get("pid")
            return pid if pid_alive(pid) else None
        try:
            return wait_for(started, timeout, interval=0.05, what=f"{host}'s supervisor")
        except LabError as e:
            raise LabError(f"{e}\n{host} supervisor.log:\n{_tail(host_dir(host) / SUPERVISOR_LOG)}") from None

    def start_supervisor(self, host: str) -> int:
        """(Re)start the host's supervisor, which boots etcd and the agent."""
        self.host(host)
        if self.supervisor_pid(host):
            raise LabError(f"{host}'s supervisor is already running")
        self._spawn_supervisor(host)
        pid = self._wait_supervisor(host)
        with self.mutate() as s:
            s["hosts"][host]["supervisor_pid"] = pid
        return pid

    def log_tails(self) -> str:
        """The last lines of every host's supervisor, etcd and agent logs: what an error
        about the lab should show (they are gone once the lab is down)."""
        out = []
        with contextlib.suppress(OSError):
            for d in sorted(HOSTS_DIR.iterdir()):
                for name in (SUPERVISOR_LOG, ETCD_LOG, AGENT_LOG):
                    t = _tail(d / name, 8)
                    if t:
                        out.append(f"--- {d.name}/{name}\n{t}")
        return ("\n" + "\n".join(out)) if out else ""
