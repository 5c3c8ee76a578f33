"""Is each etcd member healthy? Its own ``/health`` answer, asked of every member at once
(a thread each), each with a short deadline: a member that is down must not slow the
answer. Plain HTTP, never through a proxy (members are on the hosts' own network)."""
from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def endpoint_healthy(endpoint: str, timeout: float = 1.0) -> bool:
    """GET <endpoint>/health; endpoint as 'host:port' or a URL."""
    url = endpoint if endpoint.startswith("http") else f"http://{endpoint}"
    try:
        with opener.open(url + "/health", timeout=timeout) as resp:
            body = json.loads(resp.read() or b"{}")
    except (OSError, ValueError):
        return False
    return str(body.get("health")).lower() == "true"


def health(endpoints: list[str], timeout: float = 1.0) -> dict[str, bool]:
    if not endpoints:
        return {}
    with ThreadPoolExecutor(len(endpoints)) as pool:
        return dict(zip(endpoints, pool.map(lambda e: endpoint_healthy(e, timeout), endpoints)))
