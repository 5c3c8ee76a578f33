"""Virtual time: an asyncio event loop whose clock is a counter, so nothing ever waits.

Asked to wait ``timeout`` seconds for I/O (there is none in the simulator), the loop
advances the counter by ``timeout`` instead. Every sleep, ``wait_for`` and ``call_later``
of the code under test therefore runs on virtual time, in the order asyncio's scheduler
gives (a heap on due time; among timers due at the same instant, the order the heap's
shape gives), which depends on nothing outside the program: the same inputs give the
same run. No threads.

``VirtualLoop`` keeps asyncio's own iteration (``BaseEventLoop._run_once``) step for step
-- the same heap operations in the same order, the same ready queue, so runs are those
of the stock loop, event for event -- but with handles cheaper to make and compare: a
simulated cluster wakes some ten thousand timers per virtual minute, and the stock
handles' Python-level ``__init__`` and ``__lt__`` were a large part of the run's cost.
"""
from __future__ import annotations

import asyncio
import collections
import heapq
import selectors
from typing import Any, Callable, Coroutine, TypeVar

T = TypeVar("T")

# Wall-clock time at virtual 0: what hosts' clocks read (event times, heartbeat counters).
EPOCH = 1_800_000_000.0

# BaseEventLoop's: cancelled timers are swept out of the heap when there are more than
# this many timers and more than this fraction of them is cancelled
_MIN_SCHEDULED = 100
_MIN_CANCELLED_FRACTION = 0.5
_MAX_TIMEOUT = 24 * 3600
_RESOLUTION = 1e-9


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


class _Handle:
    """``asyncio.Handle`` as the loop uses it: a callback, its args and context."""

    __slots__ = ("_callback", "_args", "_context", "_cancelled")

    def __init__(self, callback: Callable[..., Any], args: tuple, context: Any) -> None:
        self._callback, self._args, self._context, self._cancelled = callback, args, context, False

    def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            self._callback = self._args = None  # type: ignore[assignment]

    def cancelled(self) -> bool:
        return self._cancelled


_new_handle = object.__new__


def _wake(fut: asyncio.Future) -> None:
    """``asyncio.futures._set_result_unless_cancelled(fut, None)``: a sleep's end."""
    if not fut.cancelled():
        fut.set_result(None)


class _Timer(list):
    """``asyncio.TimerHandle``: a one-item list ``[when]``, so that the heap compares
    timers in C with exactly TimerHandle's ``<`` (on ``when`` alone: equal times compare
    neither way), which keeps the heap's order among timers due at the same instant."""

    __slots__ = ("_callback", "_args", "_context", "_cancelled", "_scheduled", "_loop")

    def cancel(self) -> None:
        if not self._cancelled:
            if self._scheduled:
                self._loop._timer_cancelled_count += 1
            self._cancelled = True
            self._callback = self._args = None

    def cancelled(self) -> bool:
        return self._cancelled

    def when(self) -> float:
        return self[0]  # type: ignore[no-any-return]

    # a list's hash is refused; TimerHandle's is its time's
    def __hash__(self) -> int:  # type: ignore[override]
        return hash(self[0])


class _NoSelector(selectors.DefaultSelector):
    """The base loop's selector (it registers its self-pipe there); never waited on."""

    def select(self, timeout: float | None = None) -> list[Any]:
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """asyncio over a ``VirtualClock``: ``loop.time()`` is virtual, waiting advances it."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_NoSelector())
        self.clock = clock
        self._clock_resolution = _RESOLUTION
        self._ready: collections.deque = collections.deque()
        self._scheduled: list = []

    def time(self) -> float:
        return self.clock.now

    def call_soon(self, callback: Callable[..., Any], *args: Any, context: Any = None) -> _Handle:  # type: ignore[override]
        if self._closed:
            raise RuntimeError("Event loop is closed")
        h = _new_handle(_Handle)  # (no __init__ frame: every future's callback comes this way)
        h._callback, h._args, h._context, h._cancelled = callback, args, context, False
        self._ready.append(h)
        return h

    def sleeper(self, delay: float) -> tuple[asyncio.Future, _Timer]:
        """What ``asyncio.sleep(delay)`` makes, in one call: a future, and a timer that sets
        its result ``delay`` from now unless it was cancelled (hosts' loops sleep some ten
        thousand times per virtual minute)."""
        fut = asyncio.Future(loop=self)
        t = _Timer((self.clock.now + delay,))
        t._callback, t._args, t._context, t._cancelled, t._loop = _wake, (fut,), None, False, self
        heapq.heappush(self._scheduled, t)
        t._scheduled = True
        return fut, t

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any,  # type: ignore[override]
                   context: Any = None) -> _Timer:
        if delay is None:
            raise TypeError("delay must not be None")
        return self.call_at(self.clock.now + delay, callback, *args, context=context)

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any,  # type: ignore[override]
                context: Any = None) -> _Timer:
        if when is None:
            raise TypeError("when cannot be None")
        if self._closed:
            raise RuntimeError("Event loop is closed")
        t = _Timer((when,))
        t._callback, t._args, t._context, t._cancelled, t._loop = callback, args, context, False, self
        heapq.heappush(self._scheduled, t)
        t._scheduled = True
        return t

    def _run_once(self) -> None:
        """``BaseEventLoop._run_once``, step for step, with the selector's wait replaced by
        advancing the clock (``_process_events`` has nothing to process)."""
        sched = self._scheduled
        n = len(sched)
        if n > _MIN_SCHEDULED and self._timer_cancelled_count / n > _MIN_CANCELLED_FRACTION:
            kept = []
            for t in sched:
                if t._cancelled:
                    t._scheduled = False
                else:
                    kept.append(t)
            heapq.heapify(kept)
            self._scheduled = sched = kept
            self._timer_cancelled_count = 0
        else:
            while sched and sched[0]._cancelled:
                self._timer_cancelled_count -= 1
                heapq.heappop(sched)._scheduled = False
        ready, clock = self._ready, self.clock
        if not (ready or self._stopping):
            if not sched:
                raise RuntimeError("simulation deadlock: nothing scheduled and nothing ready")
            timeout = min(max(0, sched[0][0] - clock.now), _MAX_TIMEOUT)
            if timeout > 0:
                clock.now += timeout
        end = clock.now + _RESOLUTION
        while sched:
            t = sched[0]
            if t[0] >= end:
                break
            heapq.heappop(sched)._scheduled = False
            ready.append(t)
        popleft = ready.popleft
        for _ in range(len(ready)):
            h = popleft()
            if h._cancelled:
                continue
            try:
                if h._context is None:
                    h._callback(*h._args)
                else:
                    h._context.run(h._callback, *h._args)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self.call_exception_handler({"message": f"Exception in callback {h._callback!r}",
                                             "exception": exc, "handle": h})
        h = None  # type: ignore[assignment]


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
