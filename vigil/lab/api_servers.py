"""The lab's API servers: one `vigil api` per host (a supervisor child, as vigil-api.service
is on a real host), on the host's address, with a certificate from the lab's CA.

`vigil lab up` makes the first admin with a random password and an admin token, and keeps
them with the servers' URLs in /run/vigil-lab/api.json (root only): the CLI of root on
this machine finds the lab's API there, and `vigil lab status` and the demo print them.
"""
from __future__ import annotations

import json
import os
import secrets
import ssl
import time
from pathlib import Path
from typing import Any

import httpx

from vigil.pki import CA_CERT, issue
from vigil.service import access
from vigil.store.etcd import Store, StoreError, run_with_store

from .layout import RUN_DIR, LabError

API_PORT = 8443
AGENT_METRICS_PORT = 9750  # each lab agent's own /metrics (vigil.agent.metrics)
API_FILE = RUN_DIR / "api.json"
API_LOG = "api.log"
ADMIN = "admin"


def url(address: str) -> str:
    return f"https://{address}:{API_PORT}"


def server_files(ca_dir: Path, host_dir: Path, host: str, address: str) -> tuple[Path, Path]:
    """The host's API certificate (naming its address) and key."""
    out = host_dir / "api-tls"
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    issue(ca_dir, out, "server", host, ips=(address,))
    return out / "server-cert.pem", out / "server-key.pem"


def argv(vigil: str, address: str, endpoints: list[str], cert: Path, key: Path) -> list[str]:
    return [vigil, "api", "--etcd", ",".join(endpoints), "--listen", f"{address}:{API_PORT}",
            "--cert", str(cert), "--key", str(key)]


def bootstrap(endpoints: list[str], urls: list[str], ca_dir: Path) -> dict[str, Any]:
    """The first admin and a token for root on this machine, written to API_FILE (0600)."""
    password = secrets.token_urlsafe(12)

    async def go(store: Store) -> dict[str, Any]:
        try:
            await access.add_user(store, ADMIN, password, "admin")
        except access.Conflict:
            await access.set_password(store, ADMIN, password)  # a lab brought up over kept data
        return await access.create_token(store, ADMIN, "lab root", None)

    try:
        tok = run_with_store(endpoints, go, timeout=10)
    except StoreError as e:
        raise LabError(f"cannot create the lab's admin user: {e}") from None
    info = {"urls": urls, "ca": str(ca_dir / CA_CERT), "user": ADMIN, "password": password, "token": tok["token"]}
    fd = os.open(API_FILE.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=2)
    os.replace(API_FILE.with_suffix(".tmp"), API_FILE)
    return info


def read() -> dict[str, Any]:
    try:
        return dict(json.loads(API_FILE.read_text()))
    except (OSError, ValueError):
        return {}


def healthy(u: str, ca: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(u + "/healthz", verify=ssl.create_default_context(cafile=ca), timeout=timeout).json().get("etcd") is True
    except (httpx.HTTPError, ValueError, OSError):
        return False


def wait_healthy(urls: list[str], ca: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        pending = [u for u in pending if not healthy(u, ca)]
        if pending:
            time.sleep(0.3)
    if pending:
        raise LabError(f"the API did not answer at {', '.join(pending)} within {timeout:.0f}s")
