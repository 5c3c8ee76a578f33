"""The live stream behind the dashboard and `vigil events --follow`: one etcd watch per API
server, fanned out to every client as Server-Sent Events.

Two kinds of message: ``event`` (a new entry of the event log, filtered per client) and
``change`` (something under /vigil/ changed: its revision; at most one per
CHANGE_EVERY_S per client, so a busy cluster does not flood a browser that re-reads the
cluster on each). A client that falls behind loses messages, never blocks the watch: it is
sent ``change``, and re-reading gives it the present state.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import asdict
from typing import Any, AsyncIterator

from vigil.store import keys as K
from vigil.store.etcd import Store, StoreError
from vigil.store.events import event_of

log = logging.getLogger("vigil.api")
CHANGE_EVERY_S = 0.2
QUEUE = 1000
RETRY_S = 0.5


class Hub:
    """Watches etcd once and hands each change to every subscriber's queue."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.subscribers: set[asyncio.Queue[tuple[str, Any]]] = set()
        self.revision = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                start = self.revision + 1 if self.revision else await self.store.revision() + 1
                async for key, entry in self.store.watch_prefix(K.PREFIX, start):
                    rev = entry.mod_revision if entry is not None else self.revision + 1
                    self.revision = max(self.revision, rev)
                    if entry is not None and key.startswith(K.EVENTS) and isinstance(entry.value, dict):
                        self._publish("event", asdict(event_of(entry.value)))
                    self._publish("change", self.revision)
            except StoreError as e:
                log.warning("event stream: %s; watching again", e)
                self._publish("change", self.revision)
            await asyncio.sleep(RETRY_S)

    def _publish(self, kind: str, data: Any) -> None:
        for q in list(self.subscribers):
            try:
                q.put_nowait((kind, data))
            except asyncio.QueueFull:
                pass  # this client lags: it keeps its older messages and re-reads on the next change

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[tuple[str, Any]]]:
        q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(QUEUE)
        self.subscribers.add(q)
        try:
            yield q
        finally:
            self.subscribers.discard(q)


def matches(ev: dict[str, Any], host: str | None, vm: str | None, kind: str | None) -> bool:
    return (not host or ev.get("host") == host) and (not vm or ev.get("vm") == vm) and \
        (not kind or str(ev.get("kind", "")).startswith(kind))


async def sse(hub: Hub, host: str | None, vm: str | None, kind: str | None,
              changes: bool, ping_s: float = 15.0) -> AsyncIterator[str]:
    """The text of one client's stream."""
    loop = asyncio.get_running_loop()
    async with hub.subscribe() as q:
        yield f"event: hello\ndata: {json.dumps({'revision': hub.revision})}\n\n"
        last_change, pending = 0.0, False
        while True:
            timeout = ping_s if not pending else max(0.0, last_change + CHANGE_EVERY_S - loop.time())
            try:
                kind_, data = await asyncio.wait_for(q.get(), timeout)
            except asyncio.TimeoutError:
                kind_, data = ("flush", None) if pending else ("ping", None)
            if kind_ == "ping":
                yield ": ping\n\n"
                continue
            if kind_ == "event":
                if matches(data, host, vm, kind):
                    yield f"event: event\ndata: {json.dumps(data, default=str)}\n\n"
                continue
            if not changes:
                continue
            pending = True
            if loop.time() - last_change >= CHANGE_EVERY_S:
                last_change, pending = loop.time(), False
                yield f"event: change\ndata: {json.dumps({'revision': hub.revision})}\n\n"
