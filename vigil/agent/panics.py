"""The agent's watch of a VM's guest panics (QMP ``GUEST_PANICKED`` on the VM's event
monitor, vigil.hypervisor.panics), handed to VM monitoring (vigil.agent.vm_monitor),
which decides: a reset within its limits, or the QEMU ended for the crash restarts.

One watch per running VM, from its start or adoption until it is forgotten; it sleeps on
the socket (no polling). A QEMU started before it had an event monitor has none to watch:
the watch then ends quietly (such a VM's panic is seen as before, a silent guest).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from vigil.agent.context import LocalVM
from vigil.hypervisor.base import QemuError
from vigil.hypervisor.panics import guest_panics
from vigil.hypervisor.processes import VMPaths

log = logging.getLogger("vigil.agent.panics")

RETRY_S = 1.0  # between two sessions while the QEMU runs
TRIES_WITHOUT_MONITOR = 3  # no event monitor answers that often: the QEMU has none

OnPanic = Callable[[str, int], None]


async def watch_panics(vm: LocalVM, paths: VMPaths, on_panic: Callable[[], OnPanic | None],
                       still_here: Callable[[], bool]) -> None:
    """Tell ``on_panic()(vm, pid)`` of each panic of ``vm``'s guest while ``still_here()``."""
    failures = 0
    while still_here():
        try:
            async for _action in guest_panics(paths, vm.name):
                failures = 0
                log.warning("%s: guest kernel panicked (QEMU pid %d)", vm.name, vm.pid)
                cb = on_panic()
                if cb is not None:
                    cb(vm.name, vm.pid)
        except asyncio.CancelledError:
            raise
        except QemuError as e:
            failures += 1
            if failures >= TRIES_WITHOUT_MONITOR and not paths.events_sock.exists():
                log.info("%s: no guest panic watch (%s)", vm.name, e)
                return
            log.debug("%s: %s", vm.name, e)
        await asyncio.sleep(RETRY_S)


__all__ = ["watch_panics", "OnPanic"]
