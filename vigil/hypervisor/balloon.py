"""A guest's own memory figures, from its virtio-balloon device's statistics (QMP
``qom-get`` of ``guest-stats``): what the guest uses, where its QEMU's resident size
counts every page the guest ever touched (its page cache, memory it freed since).

QEMU asks the guest for them only once a polling interval is set on the device, which
is not migrated and not kept across a restart: the reader sets it whenever the figures
have never been updated. Figures older than a few intervals (a guest that stopped
answering) count as none, and the agent reports the resident size again.
"""
from __future__ import annotations

from typing import Any, Mapping

from vigil.hypervisor.argv import BALLOON_ID
from vigil.hypervisor.base import QemuError
from vigil.hypervisor.qmp import QMPConn

POLL_S = 5  # the guest's figures are asked for this often
STALE_S = 4 * POLL_S
PATH = f"/machine/peripheral/{BALLOON_ID}"


def guest_used_mb(stats: Mapping[str, Any], now: float) -> float | None:
    """MiB the guest uses (total - available; without ``available``: total - free - page
    cache), from a ``guest-stats`` value read at ``now`` (wall seconds); None when the
    guest never answered, answered too long ago, or gave no usable figures."""
    try:
        last = float(stats.get("last-update", 0) or 0)
        s = stats.get("stats") or {}
        total = float(s.get("stat-total-memory", -1))
        avail = float(s.get("stat-available-memory", -1))
        free, cache = float(s.get("stat-free-memory", -1)), float(s.get("stat-disk-caches", 0))
    except (TypeError, ValueError, AttributeError):
        return None
    if last <= 0 or now - last > STALE_S or total <= 0:
        return None
    if 0 <= avail <= total:
        used = total - avail
    elif 0 <= free <= total:
        used = total - free - max(cache, 0.0)
    else:
        return None
    return max(used, 0.0) / 2**20


async def read_guest_used(conn: QMPConn, now: float) -> float | None:
    """The guest's used MiB over an open QMP session; None without a balloon device, or
    before the guest's first answer (then the polling is turned on)."""
    try:
        stats = await conn.execute("qom-get", {"path": PATH, "property": "guest-stats"})
    except QemuError:
        return None  # no balloon device in this VM
    if not isinstance(stats, dict):
        return None
    if not stats.get("last-update"):
        try:
            await conn.execute("qom-set", {"path": PATH, "property": "guest-stats-polling-interval", "value": POLL_S})
        except QemuError:
            pass
        return None
    return guest_used_mb(stats, now)
