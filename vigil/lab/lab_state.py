"""The lab's state file (/run/vigil-lab/lab.json), its lock, and the queries on it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
from pathlib import Path
from typing import Callable, Iterator, Sequence

from vigil.store.tls import EtcdTLS

from .layout import (DATA_DIR, RUN_DIR, STATE_FILE, LabError, host_exec_argv, netns_path,
                     pid_alive, run)

Progress = Callable[[str], None]
LOCK_FILE = RUN_DIR / ".lock"
STATE_VERSION = 1


def _atomic_write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class LabState:
    """The state file and the queries on it. Cheap to construct: all state is in STATE_FILE."""

    def __init__(self, progress: Progress | None = None):
        self.progress: Progress = progress or (lambda msg: None)

    # --- state -------------------------------------------------------------------------
    def load_state(self) -> dict | None:
        try:
            return json.loads(STATE_FILE.read_text())
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise LabError(f"{STATE_FILE} is corrupt: {e}; run 'vigil lab down'") from e

    @property
    def state(self) -> dict:
        st = self.load_state()
        if st is None:
            raise LabError("no lab is up; run 'vigil lab up' first")
        return st

    def save_state(self, state: dict) -> None:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        _atomic_write_json(STATE_FILE, state)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialises state changes (faults from several threads or processes)."""
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        with open(LOCK_FILE, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def mutate(self) -> Iterator[dict]:
        """Read-modify-write the state under the lock."""
        with self.locked():
            st = self.state
            yield st
            self.save_state(st)

    # --- queries -----------------------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        return list(self.state["hosts"])

    @property
    def datastores(self) -> list[str]:
        return list(self.state["datastores"])

    def address(self, host: str) -> str:
        return self.host(host)["address"]

    def host(self, host: str, state: dict | None = None) -> dict:
        st = state or self.state
        try:
            return st["hosts"][host]
        except KeyError:
            raise LabError(f"no host {host!r} in the lab (hosts: {', '.join(st['hosts'])})") from None

    @property
    def etcd_endpoints(self) -> list[str]:
        return list(self.state["etcd"]["endpoints"])

    @property
    def etcd_tls(self) -> EtcdTLS | None:
        """The lab operator's etcd client certificate (etcd refuses clients without one)."""
        t = self.state["etcd"].get("tls") or {}
        return EtcdTLS.of(t.get("ca", ""), t.get("cert", ""), t.get("key", ""))

    def host_exec_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        self.host(host)
        return host_exec_argv(host, argv)

    def exec(self, host: str, argv: Sequence[str], check: bool = True,
             timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a command on a host (its netns and mount namespace), output captured."""
        return run(self.host_exec_argv(host, argv), check=check, timeout=timeout)

    def ping(self, src: str, dst: str, timeout_s: float = 1.0) -> bool:
        """One ICMP echo from host `src` to a host name or an address."""
        addr = self.address(dst) if dst.startswith("host") else dst
        wait = str(max(1, int(round(timeout_s))))
        return self.exec(src, ["ping", "-n", "-q", "-c", "1", "-W", wait, addr],
                         check=False, timeout=timeout_s + 5).returncode == 0

    def is_up(self) -> bool:
        st = self.load_state()
        return st is not None and self._alive(st)

    @staticmethod
    def _alive(st: dict) -> bool:
        for name, h in st.get("hosts", {}).items():
            if netns_path(name).exists() or pid_alive(h.get("supervisor_pid")):
                return True
        return False

    @staticmethod
    def _lab_mounts() -> list[str]:
        from .layout import read_mounts
        prefixes = (str(RUN_DIR) + "/", str(DATA_DIR) + "/")
        return [p for p in read_mounts() if p.startswith(prefixes)]
