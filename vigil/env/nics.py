"""A VM's NICs on the host's VM networks: taps on the host's bridges, no daemon in between.

QEMU makes one tap per NIC (``-netdev tap,ifname=...,script=no``, vigil.hypervisor.argv);
the agent only puts it on the bridge the host maps the NIC's network to
(``AgentConfig.networks``) and brings it up. From then on frames go guest <-> QEMU <-> tap
<-> bridge without the agent: an agent restart (``KillMode=process``) leaves every VM's
network as it was, and the tap goes away with its QEMU.

The taps are found from the QEMU process itself (its tun file descriptors name them in
``/proc/<pid>/fdinfo``), so a VM adopted after an agent restart, or an FT standby that went
live, is plugged by the tap it really has. An FT primary's output is held in QEMU
(vigil.hypervisor.nichold), not here.

A VM that just arrived (restart, live migration, FT failover) announces its MACs
(``announce-self``, gratuitous RARP) once its taps are on the bridge, so the bridges learn
where it is now.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path
from typing import Callable

from vigil.hypervisor import qemu

log = logging.getLogger("vigil.env.nics")

ANNOUNCE = {"initial": 50, "max": 550, "rounds": 5, "step": 100}
TAP_RE = re.compile(r"^iff:\s*(\S+)$", re.M)
NIC_RE = re.compile(r"n(\d+)$")


def taps_of(pid: int, proc: Path = Path("/proc")) -> dict[int, str]:
    """NIC index -> the tap the process ``pid`` holds for it (names from tap_name)."""
    out: dict[int, str] = {}
    try:
        fds = list((proc / str(pid) / "fdinfo").iterdir())
    except OSError:
        return out
    for fd in fds:
        try:
            m = TAP_RE.search(fd.read_text())
        except OSError:
            continue
        if m and (n := NIC_RE.search(m.group(1))):
            out[int(n.group(1))] = m.group(1)
    return out


async def _ip(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec("ip", *argv, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode:
        raise OSError(f"ip {' '.join(argv)}: {err.decode(errors='replace').strip()}")


class NicPort:
    """One NIC: its QEMU's tap, put on ``bridge``; then announced (``announce``)."""

    def __init__(self, vm: str, index: int, bridge: str, paths: qemu.VMPaths, pid: Callable[[], int],
                 announce: bool = True) -> None:
        self.vm, self.index, self.bridge, self.paths, self.pid, self.announce = vm, index, bridge, paths, pid, announce
        self.tap = ""

    async def run(self, wait_s: float = 10.0) -> None:
        """Plug the tap (waiting ``wait_s`` for QEMU to hold it), then announce."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not (tap := taps_of(self.pid()).get(self.index)):
            if loop.time() > deadline:
                raise OSError(f"QEMU (pid {self.pid()}) holds no tap for NIC {self.index}")
            await asyncio.sleep(0.1)
        self.tap = tap
        await _ip("link", "set", tap, "master", self.bridge, "up")
        log.info("%s nic%d: tap %s on %s", self.vm, self.index, tap, self.bridge)
        while self.announce and not await self._announce():
            await asyncio.sleep(0.5)

    async def _announce(self) -> bool:
        """Gratuitous RARPs from the guest's MAC, now that frames can leave."""
        try:
            async with qemu.QMPConn(self.paths, pid=self.pid(), name=self.vm) as conn:
                await conn.execute("announce-self", dict(ANNOUNCE, interfaces=[f"nic{self.index}"]))
            return True
        except qemu.QemuError as e:
            log.debug("%s nic%d: announce-self: %s", self.vm, self.index, e)
            return not os.path.exists(f"/proc/{self.pid()}")  # gone: nothing to announce


__all__ = ["NicPort", "taps_of"]
