"""etcd members of the lab: what the supervisor runs, and health checks.

A lab member is a real cluster's member: the supervisor runs plain ``etcd`` with the
ETCD_* settings of the host's ``etc/default/etcd`` that ``vigil cluster init`` wrote
(vigil.lab.lab_cluster), TLS only. Health goes over HTTPS (`GET /health`,
`POST /v3/cluster/member/list` through etcd's gRPC gateway) with the lab operator's
client certificate and proxies disabled, so it needs no etcdctl and no client library.
"""

from __future__ import annotations

import json
import shutil
import urllib.request

from .layout import LabError

from vigil.store.health import endpoint_healthy, health, open_url, opener, url_of  # noqa: F401  (the lab's names for them)
from vigil.store.tls import EtcdTLS


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if not path:
        raise LabError("etcd not found (apt-get install etcd-server)")
    return path


def member_list(endpoint: str, timeout: float = 2.0, tls: EtcdTLS | None = None) -> list[dict]:
    """Members as etcd reports them: [{'name':..., 'peerURLs': [...], 'clientURLs': [...]}]."""
    req = urllib.request.Request(url_of(endpoint, tls) + "/v3/cluster/member/list", data=b"{}",
                                 headers={"Content-Type": "application/json"})
    with open_url(req, timeout, tls) as resp:
        return json.loads(resp.read()).get("members", [])
