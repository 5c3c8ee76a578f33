"""An FT primary's network output held inside its QEMU until a checkpoint is safe.

A VM's NIC is a tap on the host's bridge with nothing in between (vigil.hypervisor.argv),
so the Remus output rule is kept by QEMU's own net filters: ``filter-buffer`` objects on
each NIC's netdev, ``queue=rx`` (the frames the guest sends to the tap). Frames pass the
filters of a netdev from the newest (tail) to the oldest (head); a buffer that is switched
off hands what it held to the older ones, then to the tap.

One *generation* of buffers (one per NIC) is added at every checkpoint's cut, while the
guest is stopped: the older generations then hold exactly the frames that precede the
checkpoint, and the new one catches everything after it. When the checkpoint is
acknowledged the older generations are released, oldest first, so frames leave in the order
the guest sent them. The agent can die in between: the buffers live in QEMU, named
``vigil-hold<gen>-n<nic>``, and the next agent finds them (:meth:`NicHold.adopt`) and
releases them only once nothing older can be failed over to.

filter-buffer wants a release interval (it cannot be 0): the longest one QEMU takes (about
71 minutes of guest run time), far beyond the seconds a buffer lives. vhost-net bypasses
QEMU's filters, so QEMU refuses them on such a NIC: :class:`NicHoldError`.
"""
from __future__ import annotations

import re
from typing import Protocol

from vigil.hypervisor.base import QemuError

PREFIX = "vigil-hold"
ID_RE = re.compile(rf"^{PREFIX}(\d+)-n(\d+)$")
MAX_INTERVAL_US = 2**32 - 1


class NicHoldError(QemuError):
    """The NIC's output cannot be held by QEMU (vhost-net, or no such netdev)."""


class Conn(Protocol):
    async def execute(self, cmd: str, args: dict | None = None) -> object: ...


def filter_id(gen: int, nic: int) -> str:
    return f"{PREFIX}{gen}-n{nic}"


class NicHold:
    """The held generations of one VM's NICs (``nics``: how many it has)."""

    def __init__(self, nics: int) -> None:
        self.nics = nics
        self.gens: list[int] = []  # oldest first
        self.next_gen = 1

    async def adopt(self, conn: Conn) -> list[int]:
        """Take over the buffers a previous agent left in the QEMU (they stay held)."""
        objs = await conn.execute("qom-list", {"path": "/objects"})
        found = sorted({int(m.group(1)) for o in objs or [] if (m := ID_RE.match(str(o.get("name", ""))))})
        self.gens = sorted(set(self.gens) | set(found))
        if self.gens:
            self.next_gen = max(self.next_gen, self.gens[-1] + 1)
        return found

    async def hold(self, conn: Conn) -> None:
        """Hold from now on (a generation exists), if not held already."""
        if not self.gens:
            await self.cut(conn)

    async def cut(self, conn: Conn) -> int:
        """A new generation: everything held so far precedes it. Returns its number (the
        cut to :meth:`release` once the checkpoint taken now is safe)."""
        if not self.nics:
            return 0
        gen = self.next_gen
        self.next_gen += 1
        added: list[str] = []
        try:
            for i in range(self.nics):
                fid = filter_id(gen, i)
                await conn.execute("object-add", {"qom-type": "filter-buffer", "id": fid, "netdev": f"net{i}",
                                                  "queue": "rx", "interval": MAX_INTERVAL_US})
                added.append(fid)
        except QemuError as e:
            for fid in added:  # half a generation holds nothing consistent: let it go
                await self._drop(conn, fid)
            if "vhost" in str(e).lower():
                raise NicHoldError(f"its NICs run on vhost-net, which QEMU's filters cannot hold: {e}") from None
            raise
        self.gens.append(gen)
        return gen

    async def release(self, conn: Conn, upto: int) -> int:
        """Let out what the generations older than ``upto`` hold, oldest first. Returns how
        many generations went."""
        n = 0
        while self.gens and self.gens[0] < upto:
            gen = self.gens[0]
            for i in range(self.nics):
                await self._drop(conn, filter_id(gen, i))
            self.gens.pop(0)
            n += 1
        return n

    async def open(self, conn: Conn) -> int:
        """Release everything and hold nothing (no checkpoint protects the output)."""
        await self.adopt(conn)
        return await self.release(conn, self.next_gen)

    async def _drop(self, conn: Conn, fid: str) -> None:
        """Switch the buffer off (it passes its frames on) and delete it."""
        try:
            await conn.execute("qom-set", {"path": f"/objects/{fid}", "property": "status", "value": "off"})
        except QemuError as e:
            if "not found" in str(e).lower():
                return
            raise
        await conn.execute("object-del", {"id": fid})


__all__ = ["NicHold", "NicHoldError", "filter_id"]
