"""etcd members of the lab: command lines (the supervisor runs them) and health checks.

Health goes over plain HTTP (`GET /health`, `POST /v3/cluster/member/list` through etcd's
gRPC gateway) with proxies disabled, so it needs no etcdctl and no client library.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

from .layout import ETCD_CLIENT_PORT, ETCD_DATA_DIR, ETCD_PEER_PORT, LabError

from vigil.store.health import endpoint_healthy, health, opener  # noqa: F401  (the lab's names for them)


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if not path:
        raise LabError("etcd not found (apt-get install etcd-server)")
    return path


def client_url(address: str) -> str:
    return f"http://{address}:{ETCD_CLIENT_PORT}"


def peer_url(address: str) -> str:
    return f"http://{address}:{ETCD_PEER_PORT}"


def member_argv(name: str, address: str, members: dict[str, str],
                data_dir: Path | None = None, token: str = "vigil-lab") -> list[str]:
    """etcd command line for member `name` at `address`; `members` maps every member name
    to its address (the initial cluster). Fast timings for the lab."""
    data_dir = data_dir or ETCD_DATA_DIR / name
    initial = ",".join(f"{n}={peer_url(a)}" for n, a in members.items())
    return [
        etcd_binary(),
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", f"{client_url(address)},http://127.0.0.1:{ETCD_CLIENT_PORT}",
        "--advertise-client-urls", client_url(address),
        "--listen-peer-urls", peer_url(address),
        "--initial-advertise-peer-urls", peer_url(address),
        "--initial-cluster", initial,
        "--initial-cluster-state", "new",
        "--initial-cluster-token", token,
        # Idle cost: a bare idle 3-member cluster takes ~0.6-0.9 % of a core per member
        # here. A 200 ms heartbeat saved ~0.1 % per member (within the noise), but sits at
        # the 5x minimum etcd allows and lets a leader stall of 0.8 s (not 0.9 s) start a
        # needless election: kept at 100. The election timeout is how soon a dead raft
        # leader is replaced: never longer. Snapshots (every 100000 entries) and
        # compaction (off) cost nothing when nothing is written.
        "--heartbeat-interval", "100",
        "--election-timeout", "1000",
        # a member cut off from the leader alone (a partial partition) must not depose it:
        # with pre-vote it asks first, and the members that still hear the leader say no
        "--pre-vote",
        # vigil's clients ping every second to notice a dead member's connection quickly.
        "--grpc-keepalive-min-time", "500ms",
        "--logger", "zap",
        "--log-outputs", "stderr",
    ]


def member_list(endpoint: str, timeout: float = 2.0) -> list[dict]:
    """Members as etcd reports them: [{'name':..., 'peerURLs': [...], 'clientURLs': [...]}]."""
    url = endpoint if endpoint.startswith("http") else f"http://{endpoint}"
    req = urllib.request.Request(url + "/v3/cluster/member/list", data=b"{}",
                                 headers={"Content-Type": "application/json"})
    with opener.open(req, timeout=timeout) as resp:
        return json.loads(resp.read()).get("members", [])
