"""A VM's guest panics, as QEMU reports them on its second QMP monitor (``events.sock``).

QEMU runs with ``-device pvpanic -action panic=pause`` (vigil.hypervisor.argv): the guest
kernel's panic notifier writes to the pvpanic device, QEMU sends ``GUEST_PANICKED`` and
keeps the guest stopped in run state "guest-panicked" until someone resets it. The agent
holds this monitor for as long as the QEMU runs; the commands of everyone else go to
``qmp.sock`` and never wait for it. No polling: the session sleeps until QEMU speaks or
closes the socket.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from qemu.qmp import EventListener, QMPClient, Runstate
from qemu.qmp import QMPError as _QMPLibError

from vigil.hypervisor.base import QemuError
from vigil.hypervisor.processes import VMPaths

CONNECT_S = 5.0
RECHECK_S = 30.0


async def guest_panics(paths: VMPaths, name: str) -> AsyncIterator[str]:
    """Yield once for each guest panic of the QEMU behind ``paths`` (its run state is
    asked first: a guest that panicked while nobody watched is told at once); ends when
    QEMU closes the connection. QemuError when the monitor cannot be reached (a QEMU
    started without it, or gone)."""
    client = QMPClient(f"{name}-events")
    listener = EventListener(["GUEST_PANICKED"])
    client.register_listener(listener)
    try:
        try:
            await asyncio.wait_for(client.connect(str(paths.events_sock)), CONNECT_S)
            status = await asyncio.wait_for(client.execute("query-status"), CONNECT_S)
        except (TimeoutError, _QMPLibError, OSError, EOFError) as e:
            raise QemuError(f"VM {name}: no event monitor at {paths.events_sock}: {e!r}") from None
        if isinstance(status, dict) and status.get("status") == "guest-panicked":
            yield "guest-panicked"
        while client.runstate == Runstate.RUNNING:
            got = asyncio.ensure_future(listener.get())
            changed = asyncio.ensure_future(client.runstate_changed())
            try:
                # (the timeout only rechecks the run state, should its change come between the
                # check and the wait)
                await asyncio.wait({got, changed}, timeout=RECHECK_S, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                if not got.done():
                    got.cancel()
            if got.done() and not got.cancelled():
                yield str(got.result().get("data", {}).get("action", "pause"))
    finally:
        client.remove_listener(listener)
        try:
            await client.disconnect()
        except Exception:  # the socket went with QEMU
            pass


__all__ = ["guest_panics", "CONNECT_S"]
