"""One QMP session with a VM's QEMU (qemu.qmp): commands, run state, power, events."""
from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from qemu.qmp import EventListener, QMPClient, Runstate
from qemu.qmp import QMPError as _QMPLibError

from vigil.hypervisor.base import QemuError
from vigil.hypervisor.processes import VMPaths, kill_pid, pid_alive, read_pid, wait_pid_exit

@dataclass(frozen=True)
class QMPEvent:
    name: str
    data: dict[str, Any]
    timestamp: float


class QMPConn:
    """One QMP session with a VM's QEMU: commands, run state, power operations, events.

    Events are buffered from :meth:`connect` on, so none is lost between connecting and
    iterating :meth:`events`. The iteration ends when QEMU closes the socket (it exited).
    """

    def __init__(self, paths: VMPaths, pid: int | None = None, name: str | None = None) -> None:
        self.paths = paths
        self.pid = pid if pid is not None else read_pid(paths.pidfile)
        self.name = name or paths.dir.name
        self._client = QMPClient(self.name)
        self._listener = EventListener()
        self._client.register_listener(self._listener)

    async def connect(self, timeout: float = 10.0) -> QMPConn:
        """Connect, retrying until the socket answers (QEMU may be just starting)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await asyncio.wait_for(self._client.connect(str(self.paths.qmp_sock)), max(0.5, timeout))
                return self
            except (TimeoutError, _QMPLibError, OSError) as e:
                if time.monotonic() >= deadline:
                    raise QemuError(f"VM {self.name}: cannot connect to QMP {self.paths.qmp_sock}: {e}") from None
                if self.pid is not None and not pid_alive(self.pid):
                    raise QemuError(f"VM {self.name}: QEMU (pid {self.pid}) is not running") from None
                await asyncio.sleep(0.1)

    @property
    def connected(self) -> bool:
        return self._client.runstate == Runstate.RUNNING

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.disconnect()

    async def __aenter__(self) -> QMPConn:
        if self._client.runstate == Runstate.IDLE:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        try:
            return await asyncio.wait_for(self._client.execute(cmd, args), timeout)
        except TimeoutError:
            raise QemuError(f"VM {self.name}: QMP {cmd} timed out after {timeout:.0f}s") from None
        except _QMPLibError as e:
            raise QemuError(f"VM {self.name}: QMP {cmd}: {e}") from None
        except (OSError, EOFError) as e:
            raise QemuError(f"VM {self.name}: QMP {cmd}: connection lost ({e!r})") from None

    def listener(self, names: str | list[str] | None = None) -> Any:
        """A context manager yielding a private ``qemu.qmp.EventListener`` for ``names``.

        For an operation (migration, block job) that waits for its own events without
        taking them from :meth:`events`, which other parts of the agent may be reading.
        """
        return self._client.listener(names)

    async def status(self) -> str:
        """The run state: "running", "paused", "shutdown", "guest-panicked", "inmigrate"..."""
        res = await self.execute("query-status")
        return str(res["status"])  # type: ignore[index]

    async def _wait_exit(self, timeout: float) -> bool:
        if self.pid is None:
            # Without a pid, QEMU closing the socket is the sign it is gone.
            deadline = time.monotonic() + timeout
            while self.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return not self.connected
        return await wait_pid_exit(self.pid, timeout)

    async def shutdown(self, timeout: float) -> bool:
        """ACPI power button, then wait for QEMU to exit; power off if it has not by timeout.

        Returns True if the guest shut down by itself, False if it had to be powered off.
        """
        try:
            await self.execute("system_powerdown", timeout=5.0)
        except QemuError:
            if self.pid is not None and not pid_alive(self.pid):
                return True
        if await self._wait_exit(timeout):
            return True
        await self.power_off()
        return False

    async def power_off(self, grace: float = 3.0) -> None:
        """Pull the plug: QMP ``quit``, then SIGKILL by pid if QEMU is still there."""
        with contextlib.suppress(QemuError):
            await self.execute("quit", timeout=2.0)
        if self.pid is None:
            return
        if not await wait_pid_exit(self.pid, grace):
            kill_pid(self.pid, signal.SIGKILL)
            await wait_pid_exit(self.pid, 10.0)

    async def events(self, names: set[str] | None = None) -> AsyncIterator[QMPEvent]:
        """QMP events (SHUTDOWN, GUEST_PANICKED, STOP, RESUME, RESET, POWERDOWN, ...).

        Ends after QEMU closes the connection and the buffered events are drained.
        """
        while True:
            if self.connected:
                try:
                    msg = await asyncio.wait_for(self._listener.get(), 0.5)
                except TimeoutError:
                    continue
            elif not self._listener.empty():
                msg = await self._listener.get()
            else:
                return
            ev = QMPEvent(
                name=str(msg["event"]),
                data=dict(msg.get("data", {}) or {}),
                timestamp=float(msg["timestamp"]["seconds"]) + float(msg["timestamp"]["microseconds"]) / 1e6,
            )
            if names is None or ev.name in names:
                yield ev

    async def on_events(self, callback: Callable[[QMPEvent], Awaitable[None] | None]) -> None:
        """Call ``callback`` for each event until the connection ends (run it as a task)."""
        async for ev in self.events():
            res = callback(ev)
            if asyncio.iscoroutine(res):
                await res
