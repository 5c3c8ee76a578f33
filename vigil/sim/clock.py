"""Virtual time: an asyncio event loop whose clock is a counter, so nothing ever waits.

The loop's selector never blocks: asked to wait ``timeout`` seconds for I/O (there is
none in the simulator), it advances the counter by ``timeout`` instead. Every sleep,
``wait_for`` and ``call_later`` of the code under test therefore runs on virtual time, in
the order asyncio's scheduler gives (a heap on due time, FIFO among equals), which depends
on nothing outside the program: the same inputs give the same run. No threads.
"""
from __future__ import annotations

import asyncio
import selectors
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")

# Wall-clock time at virtual 0: what hosts' clocks read (event times, heartbeat counters).
EPOCH = 1_800_000_000.0


class VirtualClock:
    """One counter for the whole simulated world; ``time`` and ``monotonic`` derive from it."""

    def __init__(self) -> None:
        self.now = 0.0
        self._wall = EPOCH

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        """Wall-clock time, strictly increasing by at least 1 us per call: etcd event keys
        are made of it (in ns), and a real clock never reads the same twice between two
        writes, so two events of one cycle must not share a key."""
        self._wall = max(self._wall + 1e-6, EPOCH + self.now)
        return self._wall

    def virtual(self, wall: float) -> float:
        """A wall-clock reading as virtual seconds (for the event log)."""
        return wall - EPOCH


class _NoWaitSelector(selectors.DefaultSelector):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise RuntimeError("simulation deadlock: nothing scheduled and nothing ready")
        if timeout > 0:
            self.clock.now += timeout
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """asyncio over a ``VirtualClock``: ``loop.time()`` is virtual, waiting advances it."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_NoWaitSelector(clock))
        self.clock = clock
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self.clock.now


def run(clock: VirtualClock, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh virtual loop, then close the loop."""
    loop = VirtualLoop(clock)
    try:
        return loop.run_until_complete(main)
    finally:
        for t in asyncio.all_tasks(loop):
            t.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
