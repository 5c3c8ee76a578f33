"""The guest's heartbeat channel and the output gate its output leaves through."""
from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.hypervisor.base import QemuError
from vigil.hypervisor.processes import VMPaths

HB_RE = re.compile(r"^hb (\d+) (\d+) (-?\d+) ([0-9a-f-]{8,64})(?: app (\d+))?$")


@dataclass(frozen=True)
class Heartbeat:
    """One guest heartbeat line: ``hb <seq> <uptime_ms> <acked> <boot_id> [app <n>]``;
    ``app``: the counter an application in the guest advances to say it is alive
    (``vigil-app-heartbeat``, application monitoring), -1 when none runs."""

    seq: int
    uptime_ms: int
    acked: int
    boot_id: str
    received: float  # time.time() on the host
    app: int = -1

    @classmethod
    def parse(cls, line: str, received: float | None = None) -> Heartbeat | None:
        m = HB_RE.match(line.strip())
        if not m:
            return None
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4),
                   time.time() if received is None else received, int(m.group(5) or -1))


class OutputGate:
    """Where the guest's output reaches the outside world: its heartbeat lines
    (``guest.log``) and its NICs' frames, each item with the sink that delivers it.

    Open, every item goes out at once. Held (an FT primary, the Remus output rule), items
    wait until :meth:`release` is given a cut: the count of items received when a
    checkpoint stopped the guest, released once that checkpoint is safe on the secondary.
    An item counted late is only released later, never early, so a cut taken any time
    while the guest is stopped is safe. Items leave in the order they came, whatever
    their sink.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False
        self.received = 0
        self.released = 0
        self._pending: list[tuple[Callable[[list[Any]], None], Any]] = []

    def add(self, line: str) -> None:
        """A line of the guest's output channel, for ``guest.log``."""
        self.add_to(self._write_lines, line)

    def add_to(self, sink: Callable[[list[Any]], None], item: Any) -> None:
        self.received += 1
        self._pending.append((sink, item))
        if not self.held:
            self.release(self.received)

    def hold(self) -> None:
        self.held = True

    def open(self) -> None:
        """Release everything and let items through again (no checkpoint protects them)."""
        self.held = False
        self.release(self.received)

    def release(self, upto: int) -> None:
        n = min(upto, self.received) - self.released
        if n <= 0:
            return
        out, self._pending = self._pending[:n], self._pending[n:]
        self.released += n
        batch: list[Any] = []
        for i, (sink, item) in enumerate(out):
            batch.append(item)
            if i + 1 == len(out) or out[i + 1][0] != sink:
                with contextlib.suppress(OSError):
                    sink(batch)
                batch = []

    def _write_lines(self, lines: list[str]) -> None:
        with open(self.path, "a") as f:
            f.write("".join(x + "\n" for x in lines))

    @property
    def pending(self) -> int:
        return self.received - self.released


class GuestChannel:
    """The host end of the guest heartbeat port (``hb.sock``): yields parsed heartbeats.

    The chardev accepts one client at a time; while none is connected the guest's write
    blocks, so the first line after connecting can be old (its uptime_ms tells). When the
    connection ends (QEMU exited) the iteration ends; reconnecting is the caller's job.
    Every raw line is appended to ``guest.log`` with the host time.
    """

    def __init__(self, paths: VMPaths, gate: OutputGate | None = None) -> None:
        self.paths = paths
        self.gate = gate or OutputGate(paths.guest_log)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self, timeout: float = 10.0) -> GuestChannel:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(str(self.paths.hb_sock))
                return self
            except OSError as e:
                if time.monotonic() >= deadline:
                    raise QemuError(f"cannot connect to guest channel {self.paths.hb_sock}: {e}") from None
                await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = self._reader = None

    async def __aenter__(self) -> GuestChannel:
        if self._reader is None:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def __aiter__(self) -> AsyncIterator[Heartbeat]:
        if self._reader is None:
            await self.connect()
        assert self._reader is not None
        while True:
            try:
                raw = await self._reader.readline()
            except (OSError, ValueError):
                return
            if not raw:
                return
            now = time.time()
            line = raw.decode(errors="replace").rstrip("\n")
            self.gate.add(f"{now:.3f} {line}")
            hb = Heartbeat.parse(line, now)
            if hb is not None:
                yield hb
