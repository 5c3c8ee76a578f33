"""Specs (desired state) and status (observed state) of the cluster, with validation.

Everything here is plain data: it is serialised to JSON in etcd and read back, and the
pure decision code in ``vigil.policy`` works on it without any I/O.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import PurePosixPath
from typing import Any, Mapping

from vigil.names import NAME_RE, SpecError, check_name  # noqa: F401 - NAME_RE re-exported
from vigil.rules import (ALL_RULE_KINDS, DEPENDENCY_KINDS, HOST_RULE_KINDS, RULE_KINDS, HostGroup,  # noqa: F401
                         Rule)  # re-exported: vigil.model names every record type


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    """A dataclass's field names, computed once per class (from_json runs for every key
    of every snapshot)."""
    return frozenset(f.name for f in fields(cls))


RESTART_PRIORITIES = ("highest", "high", "medium", "low", "lowest", "disabled")
ISOLATION_RESPONSES = ("leave-powered-on", "power-off", "shutdown")
# When a restarted VM counts as ready for those that wait on it (vSphere's "start next
# priority VMs when"): its host chosen, its QEMU running, its guest heartbeat seen, its
# application heartbeat seen.
READY_CONDITIONS = ("allocated", "powered-on", "guest", "app")


class HostState(str, Enum):
    """The controller's view of a host (DESIGN.md host state table)."""

    RUNNING = "running"
    AGENT_DOWN = "agent-down"
    PARTITIONED = "partitioned"
    ISOLATED = "isolated"
    FAILED = "failed"
    FENCING = "fencing"  # silent, its VMs held until its BMC confirms power off (or the watchdog bound)
    ENTERING_MAINTENANCE = "entering-maintenance"
    MAINTENANCE = "maintenance"
    UNKNOWN = "unknown"


MAX_NICS = 4


def mac_address(vm: str, index: int) -> str:
    """A stable, locally administered MAC for the VM's ``index``-th NIC (QEMU's 52:54:00
    prefix): the same on every host, so a restarted or moved VM keeps its address."""
    h = hashlib.sha256(f"{vm}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in h[:3])


@dataclass(frozen=True)
class DiskSpec:
    """One qcow2 disk: ``path`` is relative to the root of ``datastore``.

    With ``replica`` the disk is kept as two copies, the second at the same ``path`` on
    the ``replica`` datastore; every write goes to both, so the VM runs on when one
    datastore dies (QEMU's quorum driver, one vote needed)."""

    name: str
    datastore: str
    path: str
    size_mb: int = 64
    replica: str = ""

    @property
    def copies(self) -> tuple[str, ...]:
        """The datastores that hold a copy of this disk, the primary one first."""
        return (self.datastore, self.replica) if self.replica else (self.datastore,)

    def validate(self) -> None:
        check_name("disk", self.name)
        check_name("datastore", self.datastore)
        p = PurePosixPath(self.path)
        if not self.path or p.is_absolute() or ".." in p.parts:
            raise SpecError(
                f"disk {self.name}: path {self.path!r} must be a relative path inside datastore "
                f"{self.datastore!r} (no leading '/', no '..')"
            )
        if not isinstance(self.size_mb, int) or not 1 <= self.size_mb <= 16 * 1024 * 1024:
            raise SpecError(f"disk {self.name}: size_mb must be between 1 and 16777216")
        if self.replica:
            check_name("datastore", self.replica)
            if self.replica == self.datastore:
                raise SpecError(f"disk {self.name}: the replica must be on another datastore than "
                                f"{self.datastore!r}")


@dataclass(frozen=True)
class BootSpec:
    """Direct kernel boot (the lab's guest image); without it the VM boots its first disk."""

    kernel: str
    initrd: str = ""
    cmdline: str = ""


MONITORING_PRESETS = ("off", "high", "medium", "low", "custom")


@dataclass(frozen=True)
class MonitoringSpec:
    """A VM's own VM/application monitoring settings; None takes the cluster's value
    (``settings/monitoring``, vigil.policy.vm_monitoring)."""

    preset: str | None = None  # off | high | medium | low | custom
    interval_s: float | None = None  # heartbeat and I/O silent this long: reset
    max_resets: int | None = None  # at most this many resets in window_s (0: no limit)
    window_s: float | None = None  # 0: the limit counts every reset, with no window
    min_uptime_s: float | None = None  # not monitored this long after a (re)start
    application: bool | None = None  # also reset when the application heartbeat stops

    def validate(self, vm: str) -> None:
        if self.preset is not None and self.preset not in MONITORING_PRESETS:
            raise SpecError(f"VM {vm}: monitoring preset must be one of {', '.join(MONITORING_PRESETS)}")
        for f, lo, hi in (("interval_s", 1, 86400), ("window_s", 0, 366 * 86400), ("min_uptime_s", 0, 86400)):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi):
                raise SpecError(f"VM {vm}: monitoring {f} must be between {lo} and {hi}")
        if self.max_resets is not None and (not isinstance(self.max_resets, int) or isinstance(self.max_resets, bool)
                                            or not 0 <= self.max_resets <= 1000):
            raise SpecError(f"VM {vm}: monitoring max_resets must be between 0 and 1000")
        if self.application is not None and not isinstance(self.application, bool):
            raise SpecError(f"VM {vm}: monitoring application must be true or false")


@dataclass(frozen=True)
class VMSpec:
    name: str
    memory_mb: int = 128
    vcpus: int = 1
    disks: tuple[DiskSpec, ...] = ()
    boot: BootSpec | None = None
    restart_priority: str = "medium"
    isolation_response: str = "power-off"
    shutdown_timeout_s: float = 20.0
    # Desired power state: the controller keeps a VM with power "on" running somewhere.
    power: str = "on"
    # One virtio NIC per entry, on that VM network (a bridge of the same name's mapping on
    # every host, see AgentConfig.networks); its MAC follows from the VM's name.
    networks: tuple[str, ...] = ()
    # VM and application monitoring of this VM, over the cluster's (None: the cluster's)
    monitoring: MonitoringSpec | None = None
    # Restart orchestration (vigil.policy.orchestration), this VM's own: when it counts as
    # ready for the VMs that wait on it ("" / None: its tier's or the cluster's setting).
    ready: str = ""
    ready_delay_s: float | None = None
    ready_timeout_s: float | None = None
    # a virtio-balloon device: its guest's own memory figures (guest-stats) are the VM's
    # memory used in the load report instead of its QEMU's resident size
    balloon: bool = False

    def validate(self) -> None:
        check_name("VM", self.name)
        if self.monitoring is not None:
            self.monitoring.validate(self.name)
        if not isinstance(self.memory_mb, int) or not 16 <= self.memory_mb <= 1024 * 1024:
            raise SpecError(f"VM {self.name}: memory_mb must be between 16 and 1048576 (got {self.memory_mb})")
        if not isinstance(self.vcpus, int) or not 1 <= self.vcpus <= 256:
            raise SpecError(f"VM {self.name}: vcpus must be between 1 and 256 (got {self.vcpus})")
        if self.restart_priority not in RESTART_PRIORITIES:
            raise SpecError(
                f"VM {self.name}: restart_priority must be one of {', '.join(RESTART_PRIORITIES)}"
            )
        if self.isolation_response not in ISOLATION_RESPONSES:
            raise SpecError(
                f"VM {self.name}: isolation_response must be one of {', '.join(ISOLATION_RESPONSES)}"
            )
        if self.power not in ("on", "off"):
            raise SpecError(f"VM {self.name}: power must be 'on' or 'off'")
        if not 0 < self.shutdown_timeout_s <= 3600:
            raise SpecError(f"VM {self.name}: shutdown_timeout_s must be in (0, 3600]")
        if self.ready and self.ready not in READY_CONDITIONS:
            raise SpecError(f"VM {self.name}: ready must be one of {', '.join(READY_CONDITIONS)}")
        for what, x in (("ready_delay_s", self.ready_delay_s), ("ready_timeout_s", self.ready_timeout_s)):
            if x is not None and (not isinstance(x, (int, float)) or not 0 <= x <= 3600):
                raise SpecError(f"VM {self.name}: {what} must be between 0 and 3600")
        if len(self.networks) > MAX_NICS:
            raise SpecError(f"VM {self.name}: at most {MAX_NICS} networks")
        for n in self.networks:
            check_name("network", n)
        seen: set[str] = set()
        for d in self.disks:
            d.validate()
            if d.name in seen:
                raise SpecError(f"VM {self.name}: two disks named {d.name!r}")
            seen.add(d.name)

    @property
    def datastores(self) -> frozenset[str]:
        """Every datastore holding a copy of one of the VM's disks."""
        return frozenset(ds for d in self.disks for ds in d.copies)

    @property
    def replicated(self) -> bool:
        """Some disk of the VM is kept on two datastores."""
        return any(d.replica for d in self.disks)

    def disk_index(self, name: str) -> int:
        """The position of disk ``name`` (its QEMU node is ``disk{index}``)."""
        return next(i for i, d in enumerate(self.disks) if d.name == name)

    def without_stale(self, stale: Mapping[str, str]) -> "VMSpec":
        """The spec as it runs while the copies in ``stale`` (disk name -> datastore) are out
        of sync: those disks keep only their other copy, so placement asks for it alone."""
        if not stale:
            return self
        disks = []
        for d in self.disks:
            bad = stale.get(d.name)
            if d.replica and bad in d.copies:
                good = d.replica if bad == d.datastore else d.datastore
                d = replace(d, datastore=good, replica="")
            disks.append(d)
        return replace(self, disks=tuple(disks))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if self.monitoring is None:  # written only when set: older readers know no such field
            del d["monitoring"]
        for k in ("ready", "ready_delay_s", "ready_timeout_s"):  # stored only when set
            if d[k] in ("", None):
                del d[k]
        if not self.balloon:
            del d["balloon"]
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VMSpec":
        known = _field_names(cls)
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"unknown VM field(s): {', '.join(sorted(unknown))}")
        d = dict(data)
        try:
            d["disks"] = tuple(DiskSpec(**x) for x in d.get("disks", ()))
            d["networks"] = tuple(d.get("networks", ()))
            if d.get("boot"):
                d["boot"] = BootSpec(**d["boot"])
            if d.get("monitoring"):
                d["monitoring"] = MonitoringSpec(**d["monitoring"])
        except TypeError as e:
            raise SpecError(f"bad disk or boot entry: {e}") from None
        return cls(**d)


@dataclass(frozen=True)
class DatastoreSpec:
    """A shared file system mounted at the same ``path`` on every host that reaches it."""

    name: str
    path: str

    def validate(self) -> None:
        check_name("datastore", self.name)
        if not PurePosixPath(self.path).is_absolute():
            raise SpecError(f"datastore {self.name}: path must be absolute")


@dataclass(frozen=True)
class HostInfo:
    """What an agent reports about its host when it starts (inventory, not liveness)."""

    name: str
    address: str
    memory_mb: int
    cpus: int
    datastores: tuple[str, ...] = ()
    accel: str = "tcg"
    maintenance: bool = False
    networks: tuple[str, ...] = ()  # the VM networks this host has a bridge for
    # how to fence this host through its BMC (vigil.fencing.device.FenceDevice.to_json,
    # no password: a file path); empty: no fencing
    fencing: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "HostInfo":
        d = dict(data)
        d["fencing"] = dict(d.get("fencing") or {})
        d["datastores"] = tuple(d.get("datastores", ()))
        d["networks"] = tuple(d.get("networks", ()))
        return cls(**{k: v for k, v in d.items() if k in _field_names(cls)})


@dataclass(frozen=True)
class Assignment:
    """The controller's decision: which host should run a VM. ``gen`` grows on every move."""

    host: str
    gen: int
    reason: str = ""
    retries: int = 0  # restart attempts after failed starts so far (vigil.policy.retry_schedule)


@dataclass(frozen=True)
class VMStatus:
    """What the agent that runs (or last ran) a VM reports."""

    host: str
    state: str  # starting | running | stopped | failed | fenced
    pid: int = 0
    since: float = 0.0
    guest: str = "unknown"  # ok | lost | unknown
    guest_seq: int = -1
    acked: int = -1
    message: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VMStatus":
        return cls(**{k: v for k, v in data.items() if k in _field_names(cls)})


@dataclass(frozen=True)
class Event:
    time: float
    kind: str
    message: str
    host: str = ""
    vm: str = ""
    source: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    user: str = ""  # the person whose request caused it (API and CLI writes); "" for vigil's own


TASK_KINDS = ("migrate", "move-disk", "repair-disk")
TASK_ACTIVE = ("queued", "preparing", "ready", "running", "switching")
TASK_DONE = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class Task:
    """A long operation on one VM (vMotion, Storage vMotion, an offline disk repair),
    driven by the agents.

    ``src`` owns the VM; for a migration ``dst`` starts the incoming QEMU and, once its
    copy runs, takes the VM's ownership in one transaction. A repair-disk task is of a
    powered-off VM that nobody owns: ``src`` is the host that copies the disks.
    """

    id: str
    kind: str
    vm: str
    src: str
    dst: str = ""  # migrate: destination host
    datastore: str = ""  # shared-nothing migrate / move-disk: target datastore
    disk: str = ""  # move-disk: which disk; repair-disk: the disks to repair, comma-separated
    state: str = "queued"
    cancel: bool = False
    uri: str = ""  # migrate: where the destination listens
    progress: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    created: float = 0.0
    updated: float = 0.0
    reason: str = ""  # who asked: user, maintenance, evacuate
    bwlimit_mib_s: float = 0.0  # move-disk: cap on the copy (0: none), like Proxmox's bwlimit

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Task":
        return cls(**{k: v for k, v in data.items() if k in _field_names(cls)})


@dataclass(frozen=True)
class HbRecord:
    """One host's datastore heartbeat: its counter (its clock in ms), isolation flag, VMs."""

    host: str
    counter: int
    boot: str
    isolated: bool
    vms: tuple[str, ...]
