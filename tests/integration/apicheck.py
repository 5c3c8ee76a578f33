"""The lab's API from the tests: /metrics scraped and parsed with prometheus-client's own
parser, with the admin token the lab keeps in /run/vigil-lab/api.json."""
from __future__ import annotations

import ssl
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from vigil.lab import api_servers


def samples(text: str) -> dict[str, dict[tuple, float]]:
    """Prometheus text, read by prometheus-client's parser: name -> {labels: value}."""
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def scrape(timeout: float = 20.0) -> dict[str, dict[tuple, float]]:
    """Every sample of the first lab API server that answers: name -> {labels: value}. A
    server may answer 503 for a moment (etcd slow under load): tried again until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _scrape_once()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _scrape_once() -> dict[str, dict[tuple, float]]:
    api = api_servers.read()
    tls = ssl.create_default_context(cafile=api["ca"])
    last: Exception | None = None
    for url in api["urls"]:
        try:
            r = httpx.get(url + "/metrics", verify=tls, timeout=5, headers={"Authorization": f"Bearer {api['token']}"})
            r.raise_for_status()
        except httpx.HTTPError as e:
            last = e
            continue
        return samples(r.text)
    raise AssertionError(f"no lab API server answered /metrics: {last}")


def value(m: dict[str, dict[tuple, float]], name: str, **labels: str) -> float:
    return m.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def grown(before: dict[str, dict[tuple, float]], name: str, by: float, **labels: str) -> dict | None:
    """A fresh scrape if ``name`` grew by at least ``by`` since ``before``, else None."""
    m = scrape()
    return m if value(m, name, **labels) >= value(before, name, **labels) + by else None


def scrape_agent(address: str) -> dict[str, dict[tuple, float]]:
    """One lab agent's own /metrics (plain HTTP on its host's address)."""
    r = httpx.get(f"http://{address}:{api_servers.AGENT_METRICS_PORT}/metrics", timeout=5)
    r.raise_for_status()
    return samples(r.text)
