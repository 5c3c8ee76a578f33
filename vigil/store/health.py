"""Is each etcd member healthy? Its own ``/health`` answer, asked of every member at once
(a thread each), each with a short deadline: a member that is down must not slow the
answer. Never through a proxy (members are on the hosts' own network); over HTTPS with the
client certificate when ``tls`` is given (etcd then refuses anything else)."""
from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from vigil.store.tls import EtcdTLS, scheme

opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def url_of(endpoint: str, tls: EtcdTLS | None = None) -> str:
    """'host:port' or a URL -> the member's URL (https when ``tls``)."""
    return endpoint if endpoint.startswith("http") else f"{scheme(tls)}://{endpoint}"


def open_url(req: urllib.request.Request | str, timeout: float, tls: EtcdTLS | None = None):  # type: ignore[no-untyped-def]
    """urlopen without proxies, presenting the client certificate when ``tls``."""
    if tls is None:
        return opener.open(req, timeout=timeout)
    o = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                    urllib.request.HTTPSHandler(context=tls.ssl_context))
    return o.open(req, timeout=timeout)


def endpoint_healthy(endpoint: str, timeout: float = 1.0, tls: EtcdTLS | None = None) -> bool:
    """GET <endpoint>/health; endpoint as 'host:port' or a URL."""
    try:
        with open_url(url_of(endpoint, tls) + "/health", timeout, tls) as resp:
            body = json.loads(resp.read() or b"{}")
    except (OSError, ValueError):
        return False
    return str(body.get("health")).lower() == "true"


def health(endpoints: list[str], timeout: float = 1.0, tls: EtcdTLS | None = None) -> dict[str, bool]:
    if not endpoints:
        return {}
    with ThreadPoolExecutor(len(endpoints)) as pool:
        return dict(zip(endpoints, pool.map(lambda e: endpoint_healthy(e, timeout, tls), endpoints)))
