"""Which etcd member leads raft, and handing the leadership to a given host's member.

For tests of a host whose own member leads when it hangs: SIGSTOP stops the member too,
and out of the hang it still takes itself for the leader for an election timeout or
two, answering its host's lease keepalives on its own (vigil.policy.isolation
.keepalive_confirms). Over etcd's gRPC gateway (``/v3/maintenance/status``,
``/v3/maintenance/transfer-leadership``) with the lab operator's certificate, as
vigil.lab.etcd asks for the members, so it needs no etcdctl.
"""
from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from vigil.lab.etcd import member_list, open_url, url_of
from vigil.lab.layout import LabError
from vigil.store.tls import EtcdTLS


def _post(endpoint: str, path: str, body: dict[str, Any], tls: EtcdTLS | None, timeout: float = 3.0) -> dict:
    req = urllib.request.Request(url_of(endpoint, tls) + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with open_url(req, timeout, tls) as resp:
        return json.loads(resp.read() or b"{}")


def raft_leader(endpoints: list[str], tls: EtcdTLS | None = None) -> str:
    """The member id (etcd's decimal string) of the raft leader, as the first member that
    answers says."""
    last: Exception | None = None
    for ep in endpoints:
        try:
            return str(_post(ep, "/v3/maintenance/status", {}, tls)["leader"])
        except (OSError, ValueError, KeyError) as e:
            last = e
    raise LabError(f"no etcd member answers its status: {last}")


def leader_host(addresses: dict[str, str], tls: EtcdTLS | None = None) -> str:
    """The host (of ``addresses``: host -> its member's address) whose own etcd member
    leads raft, "" when none says so; each member is asked about itself."""
    for host, address in addresses.items():
        try:
            st = _post(f"{address}:2379", "/v3/maintenance/status", {}, tls, timeout=2.0)
        except (OSError, ValueError):
            continue
        if st.get("leader") and st.get("leader") == st.get("header", {}).get("member_id"):
            return host
    return ""


def member_of(endpoints: list[str], address: str, tls: EtcdTLS | None = None) -> dict:
    """The member whose client URL is on ``address`` (a host's own member)."""
    for m in member_list(endpoints[0], tls=tls):
        if any(_host_of(u) == address for u in m.get("clientURLs", [])):
            return m
    raise LabError(f"no etcd member serves clients on {address}")


def _host_of(url: str) -> str:
    return url.split("://", 1)[-1].rpartition(":")[0].strip("[]")


def move_raft_leader(endpoints: list[str], address: str, tls: EtcdTLS | None = None, timeout: float = 10.0) -> None:
    """Make the member on ``address`` the raft leader (asked of the present leader, as etcd
    wants), and wait until the members say so."""
    target = str(member_of(endpoints, address, tls)["ID"])
    deadline = time.monotonic() + timeout
    while True:
        leader = raft_leader(endpoints, tls)
        if leader == target:
            return
        if time.monotonic() > deadline:
            raise LabError(f"the etcd member on {address} did not become the raft leader within {timeout:.0f}s")
        by_id = {str(m["ID"]): m for m in member_list(endpoints[0], tls=tls)}
        urls = by_id.get(leader, {}).get("clientURLs", [])
        if urls:
            try:
                _post(urls[0], "/v3/maintenance/transfer-leadership", {"targetID": target}, tls)
            except (OSError, ValueError) as e:
                if time.monotonic() > deadline:
                    raise LabError(f"moving the raft leadership to {address}: {e}") from None
        time.sleep(0.2)
