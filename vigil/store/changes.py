"""Which groups of keys changed, as an etcd watch reports them, and waiting for a change.

The watch (vigil.store.etcd.Store.watch) calls ``note`` with each changed key; a loop
takes ``mark()`` before it reads, and after it acted waits with ``wait(mark, prefixes)``
until a key under one of its prefixes changed since. A watch set up or lost counts as a
change of every key (what happened meanwhile is unknown), so waiters wake and read, and
while no watch runs ``watching`` is False: loops then poll at their old period instead of
waiting (a lost watch never stalls a decision). No etcd here: pure bookkeeping.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable

from vigil.store import keys as K


def group(key: str) -> str:
    """The prefix of keys.py that ``key`` falls under (``/vigil/assign/vm1`` ->
    ``/vigil/assign/``; a key with no sub-path, like the leader key, is its own group)."""
    rest = key[len(K.PREFIX):] if key.startswith(K.PREFIX) else key
    i = rest.find("/")
    return K.PREFIX + rest[:i + 1] if i >= 0 else key


class Changes:
    def __init__(self) -> None:
        self.seq = 0  # raised by every change seen
        self.watching = False
        self._at: dict[str, int] = {}  # group -> seq of its last change
        self._all = 0  # seq of the last change that may have touched any key
        self._wake: asyncio.Event | None = None

    def mark(self) -> int:
        return self.seq

    def since(self, mark: int, prefixes: Iterable[str] | None = None) -> bool:
        """Whether a key under one of ``prefixes`` (None: any key) changed after ``mark``."""
        if prefixes is None or self._all > mark:
            return self.seq > mark
        return any(self._at.get(p, 0) > mark for p in prefixes)

    def note(self, key: str) -> None:
        self.seq += 1
        self._at[group(key)] = self.seq
        self._ring()

    def watch_started(self) -> None:
        self.watching = True
        self._everything()

    def watch_lost(self) -> None:
        self.watching = False
        self._everything()

    def _everything(self) -> None:
        self.seq += 1
        self._all = self.seq
        self._ring()

    def _ring(self) -> None:
        ev, self._wake = self._wake, None
        if ev is not None:
            ev.set()

    async def wait(self, mark: int, prefixes: Iterable[str] | None = None) -> None:
        """Until a key under ``prefixes`` changed after ``mark`` (no timeout: the caller
        races it against its own clock)."""
        prefixes = tuple(prefixes) if prefixes is not None else None
        while not self.since(mark, prefixes):
            if self._wake is None:
                self._wake = asyncio.Event()
            await self._wake.wait()
