"""Specs (desired state) and status (observed state) of the cluster, with validation.

Everything here is plain data: it is serialised to JSON in etcd and read back, and the
pure decision code in ``vigil.policy`` works on it without any I/O.
"""
from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import PurePosixPath
from typing import Any, Mapping


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    """A dataclass's field names, computed once per class (from_json runs for every key
    of every snapshot)."""
    return frozenset(f.name for f in fields(cls))


class SpecError(ValueError):
    """A spec or request that vigil refuses; the message is shown to the user as is."""


NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

RESTART_PRIORITIES = ("highest", "high", "medium", "low", "lowest", "disabled")
ISOLATION_RESPONSES = ("leave-powered-on", "power-off", "shutdown")


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


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SpecError(
            f"invalid {kind} name {name!r}: use 1-63 lower-case letters, digits, '.', '_' or '-'"
        )
    return name


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

    def validate(self) -> None:
        check_name("VM", self.name)
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
        return asdict(self)

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


RULE_KINDS = ("anti-affinity", "affinity")


@dataclass(frozen=True)
class Rule:
    """VM-VM rule: anti-affinity keeps the VMs on different hosts, affinity on one host."""

    name: str
    kind: str
    vms: tuple[str, ...]

    def validate(self) -> None:
        check_name("rule", self.name)
        if self.kind not in RULE_KINDS:
            raise SpecError(f"rule {self.name}: kind must be one of {', '.join(RULE_KINDS)}")
        if len(set(self.vms)) < 2:
            raise SpecError(f"rule {self.name}: name at least two different VMs")
        for v in self.vms:
            check_name("VM", v)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Rule":
        return cls(name=data["name"], kind=data["kind"], vms=tuple(data["vms"]))


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
