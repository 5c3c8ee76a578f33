"""The cluster read model as the API serves it: computed once per etcd revision (and at most
CACHE_S old, since host states also age with time), shared by every request meanwhile.

A dashboard polls it on every change, many clients may; with 1 000 VMs one computation
costs tens of milliseconds, so computing it once per change rather than once per request is
what keeps GET /vms fast. The answer is never older than the revision read first."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import FastAPI

from vigil import service
from vigil.store.etcd import StoreError
from vigil.store.health import health

CACHE_S = 1.0


HEALTH_CACHE_S = 2.0


def start(app: FastAPI) -> None:
    """The caches' state, made when the application starts."""
    app.state.cluster_lock, app.state.cluster_cache, app.state.etcd_health = asyncio.Lock(), None, None


async def etcd_members(app: FastAPI) -> list[dict[str, Any]]:
    """Each endpoint's health, asked at most every HEALTH_CACHE_S per server (a dashboard
    polls; etcd need not answer every poll), in threads (the answers are plain HTTP)."""
    st = app.state
    cached = st.etcd_health
    if cached is None or time.monotonic() - cached[0] > HEALTH_CACHE_S:
        cached = (time.monotonic(), await asyncio.to_thread(health, st.store.endpoints, 1.0, getattr(st.store, "tls", None)))
        st.etcd_health = cached
    return [{"endpoint": e, "healthy": ok} for e, ok in cached[1].items()]


async def cluster(app: FastAPI) -> dict[str, Any]:
    st = app.state
    try:
        rev = await st.store.revision()
    except StoreError:
        rev = await st.store.revision()
    async with st.cluster_lock:  # concurrent requests wait for one computation
        c = st.cluster_cache
        if c is not None and c[0] == rev and time.monotonic() - c[1] < CACHE_S:
            return c[2]
        try:
            res = await service.cluster(st.store)
        except StoreError:  # one member just died: the channel has moved on; a read may be asked again
            res = await service.cluster(st.store)
        res["by_name"] = {v["name"]: v for v in res["vms"]}
        res["encoded"] = {}
        st.cluster_cache = (rev, time.monotonic(), res)
        return res


async def encoded(app: FastAPI, part: str) -> bytes:
    """One part of the read model ("vms", "hosts") as JSON, encoded once per computation:
    listing 1 000 VMs then costs a lookup, not a serialization per request."""
    c = await cluster(app)
    if part not in c["encoded"]:
        c["encoded"][part] = json.dumps(c[part], separators=(",", ":")).encode()
    return c["encoded"][part]
