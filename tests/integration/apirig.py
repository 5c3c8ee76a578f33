"""A real etcd on a loopback port and a real `vigil api` process over HTTPS in front of it,
no lab: for the API's own tests (roles, tokens, revisions, bad input, the OpenAPI fuzzing).
Both processes are started here and ended here, by PID, with their temporary files."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
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

from vigil.lab import api_servers
from vigil.lab.localetcd import local_etcd
from vigil.lab.standalone import free_port
from vigil.model import DatastoreSpec, HostInfo
from vigil.pki import create_ca, issue
from vigil.service import access
from vigil.store import keys as K
from vigil.store.etcd import Store, run_with_store
from vigil.store.tls import EtcdTLS

ADMIN_PASSWORD = "admin-password-1"


@dataclass
class Rig:
    url: str
    ca: str
    etcd: str
    tokens: dict[str, str]  # role -> a token of a user with that role
    etcd_tls: EtcdTLS | None = None  # the client certificate the rig's etcd asks for

    def client(self, role: str | None = "admin", **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, verify=self.tls(), headers=headers, timeout=10, **kw)  # type: ignore[arg-type]

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def run(self, coro_fn):  # type: ignore[no-untyped-def]
        return run_with_store([self.etcd], coro_fn, tls=self.etcd_tls)

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


def spawn_api(etcd: str, port: int, cert: Path, key: Path, log: Path, ca: str,
              etcd_tls: EtcdTLS | None = None) -> subprocess.Popen:
    """A `vigil api` process over ``etcd`` on 127.0.0.1:``port``, answering (etcd reached),
    with the etcd client certificate ``etcd_tls`` ($VIGIL_ETCD_CA/CERT/KEY)."""
    vigil = os.path.join(os.path.dirname(sys.executable), "vigil")
    env = dict(os.environ)
    if etcd_tls is not None:
        env |= {"VIGIL_ETCD_CA": etcd_tls.ca, "VIGIL_ETCD_CERT": etcd_tls.cert, "VIGIL_ETCD_KEY": etcd_tls.key}
    proc = subprocess.Popen([vigil, "api", "--etcd", etcd, "--listen", f"127.0.0.1:{port}",
                             "--cert", str(cert), "--key", str(key)], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while not api_servers.healthy(f"https://127.0.0.1:{port}", ca):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"vigil api not ready: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen) -> None:
    """End a process this rig started (its own session), by its PID."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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
    try:
        with local_etcd(tmp) as etcd:
            endpoint = etcd.endpoint
            tokens = run_with_store([endpoint], _seed, tls=etcd.tls)
            create_ca(tmp / "ca", name="vigil test CA")
            issue(tmp / "ca", tmp, "server", "localhost", ips=("127.0.0.1",))
            port, ca = free_port(), str(tmp / "ca" / "ca-cert.pem")
            api = spawn_api(endpoint, port, tmp / "server-cert.pem", tmp / "server-key.pem", tmp / "api.log", ca,
                            etcd.tls)
            try:
                yield Rig(url=f"https://127.0.0.1:{port}", ca=ca, etcd=endpoint, tokens=tokens, etcd_tls=etcd.tls)
            finally:
                stop(api)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # a rig to try things by hand; SIGTERM ends it cleanly
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with api_rig() as r:
        print(r.url, r.ca, r.tokens["admin"], flush=True)
        asyncio.run(asyncio.sleep(3600))
