"""The lab's API servers: one `vigil api --config` per host (a supervisor child, as
vigil-api.service is on a real host), on the host's address, with the certificate and the
etcd client certificate of the host's bundle (vigil.lab.lab_cluster).

`vigil lab up` writes the first admin of the cluster directory with an admin token, and keeps
them with the servers' URLs in /run/vigil-lab/api.json (root only): the CLI of root on
this machine finds the lab's API there, and `vigil lab status` and the demo print them.
"""
from __future__ import annotations

import json
import os
import ssl
import time
from typing import Any

import httpx

from vigil.bootstrap.admin import create_admin
from vigil.bootstrap.cluster_dir import ADMIN_USER, Cluster
from vigil.pki import CA_CERT
from vigil.store.etcd import StoreError

from .layout import RUN_DIR, LabError

API_PORT = 8443
AGENT_METRICS_PORT = 9750  # each lab agent's own /metrics (vigil.agent.metrics)
API_FILE = RUN_DIR / "api.json"
API_LOG = "api.log"
ADMIN = ADMIN_USER


def url(address: str) -> str:
    return f"https://{address}:{API_PORT}"


def bootstrap(cluster: Cluster, urls: list[str]) -> dict[str, Any]:
    """The first admin (`vigil cluster init`'s credentials, written to etcd as on a real
    cluster) and a token for root on this machine, written to API_FILE (0600)."""
    try:
        made = create_admin(cluster, token_name="lab root", reset=True)  # reset: a lab over kept data
    except StoreError as e:
        raise LabError(f"cannot create the lab's admin user: {e}") from None
    info = {"urls": urls, "ca": str(cluster.ca_dir / CA_CERT), "user": ADMIN_USER,
            "password": cluster.admin_password(), "token": made["token"]}
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
