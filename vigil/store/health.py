"""Is each etcd member healthy? Its own ``/health`` answer, asked of every member at once,
each with a short deadline (a member that is down must not slow the answer)."""
from __future__ import annotations

import asyncio

import httpx


async def member_health(endpoints: list[str], timeout: float = 1.0) -> dict[str, bool]:
    async def one(client: httpx.AsyncClient, ep: str) -> bool:
        url = ep if ep.startswith("http") else f"http://{ep}"
        try:
            r = await client.get(url + "/health", timeout=timeout)
            return str(r.json().get("health")).lower() == "true"
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    async with httpx.AsyncClient() as client:
        answers = await asyncio.gather(*(one(client, e) for e in endpoints))
    return dict(zip(endpoints, answers))
