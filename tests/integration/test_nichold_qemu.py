"""A VM's tap NIC and the FT output hold against a real QEMU (no lab).

QEMU makes the NIC's tap (found back from its fdinfo), ``announce-self`` makes QEMU send a
RARP from the NIC, and a packet socket on the tap counts what gets out: nothing while the
NIC's output is held, one generation at a time as cuts are released, all of it once open.
The tap is on no bridge and has no address: the frames go nowhere else. Needs root and
qemu-system-x86_64; every QEMU is killed by pid at the end.
"""
from __future__ import annotations

import asyncio
import dataclasses
import socket
import subprocess
import time

import pytest

from vigil.env.nics import taps_of
from vigil.hypervisor import qemu as Q
from vigil.hypervisor.nichold import NicHold
from vigil.lab.standalone import Standalone, unavailable

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(unavailable() is not None, reason=unavailable() or ""),
    pytest.mark.timeout(300),
]

ETH_P_RARP = 0x8035


def rarps(sock: socket.socket, wait_s: float) -> int:
    n = 0
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            frame = sock.recv(2048)
        except TimeoutError:
            break
        n += int.from_bytes(frame[12:14], "big") == ETH_P_RARP
    return n


async def test_a_tap_nic_holds_its_output_by_generations_and_goes_with_its_qemu(rig: Standalone) -> None:
    spec = dataclasses.replace(rig.spec(extra=""), networks=("vmnet",))
    paths, conn = await rig.start(spec)
    pid = next(iter(rig.pids))
    taps = taps_of(pid)
    assert taps == {0: Q.tap_name(paths, 0)}
    tap = taps[0]
    subprocess.run(["ip", "link", "set", tap, "up"], check=True)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_RARP))
    sock.bind((tap, 0))

    async def announce() -> None:
        await conn.execute("announce-self", {"initial": 50, "max": 50, "rounds": 1, "step": 10,
                                             "interfaces": ["nic0"]})
        await asyncio.sleep(0.3)

    with sock:
        await announce()
        assert await asyncio.to_thread(rarps, sock, 1.0) == 1  # open: out at once
        h = NicHold(1)
        await h.hold(conn)
        await announce()
        cut = await h.cut(conn)
        await announce()
        assert await asyncio.to_thread(rarps, sock, 1.0) == 0  # both held
        assert await h.release(conn, cut) == 1
        assert await asyncio.to_thread(rarps, sock, 1.0) == 1  # the one before the cut
        # a new agent finds the held generation in QEMU and keeps it until it opens
        again = NicHold(1)
        assert await again.adopt(conn) == [cut]
        assert await asyncio.to_thread(rarps, sock, 0.5) == 0
        assert await again.open(conn) == 1
        assert await asyncio.to_thread(rarps, sock, 1.0) == 1
        objs = await conn.execute("qom-list", {"path": "/objects"})
        assert not [o for o in objs if o["name"].startswith("vigil-hold")]
    await rig.close()
    # the kernel removes the tap once QEMU's last descriptor of it is closed, a moment after
    # the process is gone
    deadline = time.monotonic() + 10
    while subprocess.run(["ip", "link", "show", tap], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the tap outlived QEMU"
        await asyncio.sleep(0.1)
