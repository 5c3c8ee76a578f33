"""A real etcd on a loopback port and a real `vigil api` process over HTTPS in front of it,
no lab: for the API's own tests (roles, tokens, revisions, bad input, the OpenAPI fuzzing).
Both processes are started here and ended here, by PID, with their temporary files."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import httpx

from vigil.model import DatastoreSpec, HostInfo
from vigil.pki import create_ca, issue
from vigil.service import access
from vigil.store import keys as K
from vigil.store.etcd import Store, run_with_store

ADMIN_PASSWORD = "admin-password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Rig:
    url: str
    ca: str
    etcd: str
    tokens: dict[str, str]  # role -> a token of a user with that role

    def client(self, role: str | None = "admin", **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, verify=self.tls(), headers=headers, timeout=10, **kw)  # type: ignore[arg-type]

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def run(self, coro_fn):  # type: ignore[no-untyped-def]
        return run_with_store([self.etcd], coro_fn)

    def dump(self) -> dict:
        """Every key with its value and revision (what a refused request must leave alone)."""
        async def go(s: Store) -> dict:
            out = {}
            for prefix in (K.PREFIX, K.AUTH):
                for k, e in (await s.get_prefix(prefix)).items():
                    if not k.startswith((K.EVENTS, K.SESSIONS, K.LOGINFAIL)):
                        out[k] = (e.value, e.mod_revision)
            return out
        return self.run(go)


def _wait(what: str, ok, timeout: float, proc: subprocess.Popen, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-2000:]}")
        if ok():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout}s: {log.read_text()[-2000:]}")


async def _seed(store: Store) -> dict[str, str]:
    """Three users (one per role) with a token each, two hosts and a datastore as agents
    would have written them."""
    tokens = {}
    for role in access.ROLES:
        await access.add_user(store, role, ADMIN_PASSWORD if role == "admin" else f"{role}-password", role)
        tokens[role] = (await access.create_token(store, role, "tests", None))["token"]
    await store.put(K.DATASTORES + "ds1", asdict(DatastoreSpec(name="ds1", path="/srv/ds1")))
    for h in ("h1", "h2"):
        await store.put(K.HOSTS + h, asdict(HostInfo(name=h, address="127.0.0.1", memory_mb=1024, cpus=2,
                                                     datastores=("ds1",), networks=("lan",))))
    return tokens


@contextmanager
def api_rig() -> Iterator[Rig]:
    tmp = Path(tempfile.mkdtemp(prefix="vigil-apirig-"))
    procs: list[subprocess.Popen] = []
    try:
        cport, pport, aport = free_port(), free_port(), free_port()
        etcd_log = tmp / "etcd.log"
        procs.append(subprocess.Popen(
            [shutil.which("etcd") or "etcd", "--name", "t", "--data-dir", str(tmp / "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{cport}", "--advertise-client-urls", f"http://127.0.0.1:{cport}",
             "--listen-peer-urls", f"http://127.0.0.1:{pport}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-cluster", f"t=http://127.0.0.1:{pport}", "--log-outputs", "stderr"],
            stdout=subprocess.DEVNULL, stderr=etcd_log.open("wb"), start_new_session=True))
        endpoint = f"127.0.0.1:{cport}"

        def etcd_ok() -> bool:
            try:
                return httpx.get(f"http://{endpoint}/health", timeout=1).json().get("health") == "true"
            except (httpx.HTTPError, ValueError):
                return False
        _wait("etcd", etcd_ok, 30, procs[0], etcd_log)
        tokens = run_with_store([endpoint], _seed)
        create_ca(tmp / "ca", name="vigil test CA")
        issue(tmp / "ca", tmp, "server", "localhost", ips=("127.0.0.1",))
        api_log = tmp / "api.log"
        vigil = os.path.join(os.path.dirname(sys.executable), "vigil")
        procs.append(subprocess.Popen(
            [vigil, "api", "--etcd", endpoint, "--listen", f"127.0.0.1:{aport}",
             "--cert", str(tmp / "server-cert.pem"), "--key", str(tmp / "server-key.pem")],
            stdout=api_log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
        url, ca = f"https://127.0.0.1:{aport}", str(tmp / "ca" / "ca-cert.pem")

        def api_ok() -> bool:
            try:
                return httpx.get(url + "/healthz", verify=ssl.create_default_context(cafile=ca), timeout=1).json().get("etcd") is True
            except (httpx.HTTPError, ValueError):
                return False
        _wait("vigil api", api_ok, 30, procs[1], api_log)
        yield Rig(url=url, ca=ca, etcd=endpoint, tokens=tokens)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # a rig to try things by hand; SIGTERM ends it cleanly
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with api_rig() as r:
        print(r.url, r.ca, r.tokens["admin"], flush=True)
        asyncio.run(asyncio.sleep(3600))
