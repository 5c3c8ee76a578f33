"""A VM's NICs on the host's VM networks: the agent carries their frames.

QEMU serves each NIC's frames on a unix socket (``-netdev stream``: a 4-byte big-endian
length, then the frame). The agent connects to it and plugs a tap device into the bridge
the host maps the NIC's network to (``AgentConfig.networks``). Frames from the network go
straight to the guest; frames from the guest go out through the VM's
:class:`~vigil.hypervisor.qemu.OutputGate`, so that an FT primary's packets leave only
once the checkpoint that produced them is safe on the secondary (the Remus output rule),
in order with the guest's other output.

A VM that just arrived (restart, live migration, FT failover) announces its MACs
(``announce-self``, gratuitous RARP) once the agent is connected, so the bridges learn
where it is now. The tap goes away with the agent's file descriptor.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import struct
from pathlib import Path
from typing import Callable

from vigil.hypervisor import qemu

log = logging.getLogger("vigil.agent.nics")

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_FRAME = 65536
ANNOUNCE = {"initial": 50, "max": 550, "rounds": 5, "step": 100}


def tap_name(vm: str, index: int) -> str:
    """A tap name (at most 15 characters) that tells which VM's which NIC it is."""
    return f"vt{hashlib.sha256(vm.encode()).hexdigest()[:9]}n{index}"


def open_tap(name: str) -> int:
    """A new tap device ``name`` (no packet information header), non-blocking."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


async def _ip(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec("ip", *argv, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode:
        raise OSError(f"ip {' '.join(argv)}: {err.decode(errors='replace').strip()}")


class NicPort:
    """One NIC: QEMU's frame socket <-> a tap on ``bridge``, guest frames via ``gate``."""

    def __init__(self, vm: str, index: int, sock: Path, bridge: str, gate: qemu.OutputGate,
                 qmp_paths: qemu.VMPaths, pid: Callable[[], int], announce: bool = True) -> None:
        self.vm, self.index, self.sock, self.bridge, self.gate = vm, index, sock, bridge, gate
        self.qmp_paths, self.pid, self.announce = qmp_paths, pid, announce
        self.tap = tap_name(vm, index)
        self.fd: int | None = None

    async def run(self) -> None:
        """Carry frames until cancelled; reconnect when QEMU's socket goes away."""
        try:
            self.fd = open_tap(self.tap)
            await _ip("link", "set", self.tap, "master", self.bridge, "up")
            announced = not self.announce
            while True:
                try:
                    reader, writer = await asyncio.open_unix_connection(str(self.sock))
                except OSError:
                    await asyncio.sleep(0.2)
                    continue
                try:
                    if not announced:
                        announced = await self._announce()
                    await self._carry(reader, writer)
                except (OSError, asyncio.IncompleteReadError) as e:
                    log.debug("%s nic%d: %s", self.vm, self.index, e)
                finally:
                    writer.close()
                await asyncio.sleep(0.2)
        finally:
            if self.fd is not None:
                with contextlib.suppress(OSError):
                    asyncio.get_running_loop().remove_reader(self.fd)
                os.close(self.fd)
                self.fd = None

    async def _announce(self) -> bool:
        """Gratuitous RARPs from the guest's MAC, now that frames can leave."""
        try:
            async with qemu.QMPConn(self.qmp_paths, pid=self.pid(), name=self.vm) as conn:
                await conn.execute("announce-self", dict(ANNOUNCE, interfaces=[f"nic{self.index}"]))
            return True
        except qemu.QemuError as e:
            log.debug("%s nic%d: announce-self: %s", self.vm, self.index, e)
            return False

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        fd = self.fd
        assert fd is not None

        def to_guest() -> None:
            while True:
                try:
                    frame = os.read(fd, MAX_FRAME)
                except BlockingIOError:
                    return
                writer.write(struct.pack(">I", len(frame)) + frame)

        def to_tap(frames: list[bytes]) -> None:
            # released later by the gate: the tap may be closed by then, and its number
            # reused by another file
            if self.fd != fd:
                return
            for f in frames:
                with contextlib.suppress(BlockingIOError):
                    os.write(fd, f)

        loop.add_reader(fd, to_guest)
        try:
            while True:
                n = struct.unpack(">I", await reader.readexactly(4))[0]
                frame = await reader.readexactly(n)
                self.gate.add_to(to_tap, frame)
        finally:
            loop.remove_reader(fd)


__all__ = ["NicPort", "tap_name", "open_tap"]
