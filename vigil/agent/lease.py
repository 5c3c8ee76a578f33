"""The host's lease, and the keys that say the host is here.

The lease is the host's membership: ``alive/<host>`` and every ownership key the host
holds are bound to it, so they vanish when the host stops renewing it. A restarted agent
reuses the lease of its previous run when it is still alive (the lease file in the run
dir), so that its VMs' ownership keys survive the restart. ``hosts/<host>`` (what the
host offers) and ``datastores/<name>`` (first seen) are published along with it.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from vigil.agent.context import HostContext
from vigil.fencing.device import FenceDevice
from vigil.model import HostInfo
from vigil.policy.fencing import restart_mark_ttl
from vigil.policy.isolation import StallWatch, keepalive_confirms, read_confirms
from vigil.policy.keepalive import keepalive_delay
from vigil.store import keys as K
from vigil.store.etcd import StoreError

log = logging.getLogger("vigil.agent")


def fence_device(cfg: object) -> dict:
    """This host's [fencing], as hosts/<name> publishes it for the controller (no password)."""
    dev = FenceDevice.from_config(cfg)
    return dev.to_json() if dev is not None else {}


class HostLease:
    def __init__(self, host: HostContext, boot: str, stalls: StallWatch | None = None) -> None:
        """``stalls``: the host's own stalls (its heartbeat tick's); after one past
        hb_grace a keepalive's answer is checked by a read (see loop)."""
        self.host = host
        self.boot = boot  # this agent run's id, in alive/ and the heartbeat files
        self.stalls = stalls
        self.id = 0
        self.ok_until = 0.0  # on the host's monotonic clock
        self.file = Path(host.cfg.run_dir) / "agent-lease.json"
        self.published: set[str] = set()  # datastores/ keys this host created

    def ok(self) -> bool:
        return self.id != 0 and self.host.env.clock.monotonic() < self.ok_until

    def info(self) -> HostInfo:
        h = self.host
        return HostInfo(
            name=h.me, address=h.cfg.address, memory_mb=h.cfg.memory_mb, cpus=h.cfg.cpus,
            datastores=tuple(sorted(n for n, ok in h.ds_ok.items() if ok)), accel=h.accel,
            networks=tuple(sorted(h.cfg.networks)),
            fencing=fence_device(h.cfg),
        )

    async def obtain(self) -> None:
        """Reuse the lease of a previous agent run if it is still alive, else grant a new one."""
        store = self.host.store
        old = 0
        try:
            old = int(json.loads(self.file.read_text())["lease"])
        except (OSError, ValueError, KeyError):
            pass
        t0 = self.host.env.clock.monotonic()
        if old and await store.lease_ttl(old) > 0 and await store.keepalive(old) > 0:
            self.id = old
        else:
            self.id = await store.grant(self.host.cfg.lease_ttl)
            self.file.write_text(json.dumps({"lease": self.id}))
        self.ok_until = t0 + self.host.cfg.lease_ttl
        await self.publish()
        try:  # a restart this agent completes (mark_restart): its silence is over
            await store.delete(K.RESTARTING + self.host.me)
        except StoreError:
            pass

    async def mark_restart(self) -> None:
        """On a clean stop (``systemctl restart``/``stop``): mark the host's coming silence
        as a planned agent restart, on a short lease of its own, so that the controller
        does not fence the host through its BMC meanwhile (vigil.policy.fencing); the next
        agent run clears it. Best effort: without it, a host with a BMC may be fenced."""
        h, cfg = self.host, self.host.cfg
        ttl = restart_mark_ttl(cfg.timing())
        try:
            mark = await h.store.grant(ttl)
            await h.store.put(K.RESTARTING + h.me, {"boot": self.boot, "pid": os.getpid()}, lease=mark)
        except StoreError as e:
            log.warning("could not mark the agent's restart: %s", e)

    async def publish(self) -> None:
        h, store = self.host, self.host.store
        for name, path in h.cfg.datastores.items():
            if h.ds_ok.get(name) and (K.DATASTORES + name) not in self.published:
                await store.create(K.DATASTORES + name, {"name": name, "path": path})
                self.published.add(K.DATASTORES + name)
        info = self.info()
        await store.put(K.HOSTS + h.me, info.__dict__ | {"datastores": list(info.datastores),
                                                         "networks": list(info.networks)})
        await store.put(K.ALIVE + h.me, {"pid": os.getpid(), "boot": self.boot, "time": h.env.clock.time()},
                        lease=self.id)

    async def loop(self) -> None:
        h = self.host
        timing = h.cfg.timing()
        while not h.stopped.is_set():
            t0 = h.env.clock.monotonic()
            try:
                if self.id == 0:
                    await self.obtain()
                    await h.event("host-joined", f"{h.me} has a lease (accel {h.accel})")
                else:
                    ttl = await h.store.keepalive(self.id)
                    if ttl > 0 and not self._answer_counts():
                        log.info("lease %x: keepalive answered after this host stood still; "
                                 "confirming it with a read", self.id)
                        ttl = await self._read_back()  # (a StoreError: not confirmed, tried again)
                    if ttl > 0:
                        was_lost = not self.ok()
                        self.ok_until = t0 + h.cfg.lease_ttl
                        if was_lost:
                            await self.publish()
                    else:
                        log.warning("lease %x expired; asking for a new one", self.id)
                        self.id = 0
                        continue
            except StoreError as e:
                log.warning("lease: %s", e)
            await h.sleep(keepalive_delay(timing))

    def _answer_counts(self) -> bool:
        """Whether a keepalive's answer alone confirms the lease: not after this host stood
        still past hb_grace since the last confirmation (vigil.policy.isolation)."""
        cfg, now = self.host.cfg, self.host.env.clock.monotonic()
        stalled = self.stalls.since(self.ok_until - cfg.lease_ttl, now) if self.stalls is not None else 0.0
        return keepalive_confirms(stalled, cfg.hb_grace_s)

    async def _read_back(self) -> int:
        """After a stall: a keepalive may have been answered by this host's own member,
        stopped with it and still taking itself for the raft leader, though the cluster
        revoked the lease meanwhile. A read needs the quorum: the lease is confirmed
        when it shows ``alive/<host>`` on it (its TTL returned), gone when it does not (0)."""
        h = self.host
        e = await h.store.get(K.ALIVE + h.me)
        if read_confirms(e.lease if e is not None else None, self.id):
            return h.cfg.lease_ttl
        log.warning("lease %x: answered after a stall, but alive/%s is no longer on it: "
                    "the cluster let it go", self.id, h.me)
        return 0
