"""The cluster as typed, immutable records: the one place that turns etcd keys into state.

``cluster_state`` reads a snapshot (key -> Entry at one revision) and returns a
``ClusterState``: per prefix, the VM's or host's name mapped to a record that keeps the
etcd revision (and lease, for leased keys) callers need for guarded transactions. Every
value is read exactly as the controller and agents read it before, defaults included; a
value that does not parse is left out rather than raising, so one bad key cannot stop a
loop. Mappings keep the snapshot's key order (etcd's order): reconcile acts in it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from vigil.model import Assignment, DatastoreSpec, HostGroup, HostInfo, Rule, SpecError, Task, VMSpec, VMStatus
from vigil.store import keys as K
from vigil.store.etcd import Entry


# what a malformed value raises while it is read: skipped, never propagated
_BAD = (SpecError, TypeError, ValueError, KeyError, AttributeError, IndexError)


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class HostRecord:
    info: HostInfo
    rev: int


@dataclass(frozen=True)
class HostStateRecord:
    """``hoststate/<host>``: the controller's last classification (``state`` as written)."""

    state: Any
    rev: int


@dataclass(frozen=True)
class Leader:
    host: str
    lease: int
    rev: int


@dataclass(frozen=True)
class VMRecord:
    spec: VMSpec
    rev: int


@dataclass(frozen=True)
class AssignRecord:
    assignment: Assignment
    rev: int


@dataclass(frozen=True)
class OwnerRecord:
    """``own/<vm>``: the host that may run the VM, bound to that host's lease."""

    host: str
    lease: int
    rev: int


@dataclass(frozen=True)
class TaskRecord:
    task: Task
    rev: int


@dataclass(frozen=True)
class FtRecord:
    """``ft/<vm>``: FT is on; its secondary (None: not placed yet) and epoch."""

    secondary: str | None
    epoch: int
    rev: int


@dataclass(frozen=True)
class FtReport:
    """``ftack/<vm>`` or ``ftrx/<vm>``, written by a secondary under its lease. ``epoch`` is
    kept as written: readers compare it to the ft key's epoch as it is."""

    host: Any
    epoch: Any
    seq: int
    lease: int
    rev: int
    uri: str = ""


@dataclass(frozen=True)
class FtStat:
    """``ftstat/<vm>``, by the primary: ``valid_from`` is (epoch, oldest checkpoint that may
    run), None when it names none (or does not parse)."""

    secondary: Any
    valid_from: tuple[int, int] | None
    rev: int
    abandoned: int = 0


@dataclass(frozen=True)
class DiskStateRecord:
    """``diskstate/<vm>``: the stale and resyncing copies of a VM's replicated disks."""

    value: Mapping[str, Any]
    rev: int


@dataclass(frozen=True)
class ClusterState:
    revision: int = 0  # the newest mod_revision in the snapshot (0: empty)
    hosts: Mapping[str, HostRecord] = field(default_factory=_empty)
    alive: Mapping[str, int] = field(default_factory=_empty)  # host -> its lease
    host_states: Mapping[str, HostStateRecord] = field(default_factory=_empty)
    maintenance: frozenset[str] = frozenset()
    restarting: Mapping[str, int] = field(default_factory=_empty)  # host -> the lease of its restart mark
    leader: Leader | None = None
    vms: Mapping[str, VMRecord] = field(default_factory=_empty)
    assignments: Mapping[str, AssignRecord] = field(default_factory=_empty)
    owners: Mapping[str, OwnerRecord] = field(default_factory=_empty)
    statuses: Mapping[str, VMStatus] = field(default_factory=_empty)
    tasks: Mapping[str, TaskRecord] = field(default_factory=_empty)
    rules: Mapping[str, Rule] = field(default_factory=_empty)
    datastores: Mapping[str, DatastoreSpec] = field(default_factory=_empty)
    ft: Mapping[str, FtRecord] = field(default_factory=_empty)
    ft_acks: Mapping[str, FtReport] = field(default_factory=_empty)
    ft_rx: Mapping[str, FtReport] = field(default_factory=_empty)
    ft_stats: Mapping[str, FtStat] = field(default_factory=_empty)
    disk_states: Mapping[str, DiskStateRecord] = field(default_factory=_empty)
    # settings/<name>: the raw object; each policy module reads its own into its type
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty)
    # load/<host>: the agent's smoothed measurements, raw (vigil.policy.drs_load reads them)
    loads: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty)
    host_groups: Mapping[str, HostGroup] = field(default_factory=_empty)


# -- one reader per prefix ----------------------------------------------------------------
def _dict(e: Entry) -> dict[str, Any]:
    if not isinstance(e.value, dict):
        raise TypeError(f"{e.key}: not an object")
    return e.value


def _host(e: Entry) -> HostRecord:
    return HostRecord(info=HostInfo.from_json(_dict(e)), rev=e.mod_revision)


def _host_state(e: Entry) -> HostStateRecord:
    return HostStateRecord(state=_dict(e).get("state"), rev=e.mod_revision)


def read_assignment(value: Any) -> Assignment:
    """An ``assign/`` value (the controller writes whole Assignments; a VM component
    protection power-off names no host)."""
    if not isinstance(value, dict):
        raise TypeError("an assignment is an object")
    try:
        return Assignment(**value)
    except TypeError:
        return Assignment(host=value.get("host"), gen=int(value.get("gen", 0)), reason=str(value.get("reason", "")))


def _assign(e: Entry) -> AssignRecord:
    return AssignRecord(assignment=read_assignment(e.value), rev=e.mod_revision)


def _owner(e: Entry) -> OwnerRecord:
    if not isinstance(e.value, str):
        raise TypeError(f"{e.key}: an owner is a host name")
    return OwnerRecord(host=e.value, lease=e.lease, rev=e.mod_revision)


def _vm(e: Entry) -> VMRecord:
    return VMRecord(spec=VMSpec.from_json(_dict(e)), rev=e.mod_revision)


def _task(e: Entry) -> TaskRecord:
    return TaskRecord(task=Task.from_json(_dict(e)), rev=e.mod_revision)


def _datastore(e: Entry) -> DatastoreSpec:
    v = _dict(e)
    return DatastoreSpec(name=v["name"], path=v["path"])


def _ft(e: Entry) -> FtRecord:
    v = _dict(e)
    return FtRecord(secondary=v.get("secondary"), epoch=int(v.get("epoch", 0)), rev=e.mod_revision)


def _ft_report(e: Entry) -> FtReport:
    v = _dict(e)
    return FtReport(host=v.get("host"), epoch=v.get("epoch"), seq=int(v.get("seq", -1)), lease=e.lease,
                    rev=e.mod_revision, uri=str(v.get("uri", "")))


def _ft_stat(e: Entry) -> FtStat:
    v = _dict(e)
    vf = v.get("valid_from")
    valid_from: tuple[int, int] | None = None
    if vf:
        try:
            valid_from = (int(vf[0]), int(vf[1]))
        except _BAD:
            valid_from = None
    try:
        abandoned = int(v.get("abandoned", 0))
    except _BAD:
        abandoned = 0
    return FtStat(secondary=v.get("secondary"), valid_from=valid_from, rev=e.mod_revision, abandoned=abandoned)


def _disk_state(e: Entry) -> DiskStateRecord:
    return DiskStateRecord(value=MappingProxyType(dict(_dict(e))), rev=e.mod_revision)


def read_leader(e: Entry | None) -> Leader | None:
    """The leader key as a record (None: absent, or not a host name)."""
    if e is None or not isinstance(e.value, str):
        return None
    return Leader(host=e.value, lease=e.lease, rev=e.mod_revision)


_READERS: dict[str, tuple[str, Callable[[Entry], Any]]] = {
    K.HOSTS: ("hosts", _host),
    K.ALIVE: ("alive", lambda e: e.lease),
    K.HOSTSTATE: ("host_states", _host_state),
    K.MAINTENANCE: ("maintenance", lambda e: True),
    K.RESTARTING: ("restarting", lambda e: e.lease),
    K.VMS: ("vms", _vm),
    K.ASSIGN: ("assignments", _assign),
    K.OWN: ("owners", _owner),
    K.VMSTATUS: ("statuses", lambda e: VMStatus.from_json(_dict(e))),
    K.TASKS: ("tasks", _task),
    K.RULES: ("rules", lambda e: Rule.from_json(_dict(e))),
    K.DATASTORES: ("datastores", _datastore),
    K.FT: ("ft", _ft),
    K.FTACK: ("ft_acks", _ft_report),
    K.FTRX: ("ft_rx", _ft_report),
    K.FTSTAT: ("ft_stats", _ft_stat),
    K.DISKSTATE: ("disk_states", _disk_state),
    K.SETTINGS: ("settings", lambda e: MappingProxyType(dict(_dict(e)))),
    K.LOAD: ("loads", lambda e: MappingProxyType(dict(_dict(e)))),
    K.HOSTGROUPS: ("host_groups", lambda e: HostGroup.from_json(_dict(e))),
}


def _split(key: str) -> tuple[str, str] | None:
    """(prefix, name) of a key under one of the per-name prefixes; None otherwise."""
    if not key.startswith(K.PREFIX):
        return None
    rest = key[len(K.PREFIX):]
    head, sep, name = rest.partition("/")
    if not sep:
        return None
    return K.PREFIX + head + "/", name


def _read_key(key: str, e: Entry) -> tuple[str, str, Any] | None:
    """(attribute, name, record) of one key; None for a key that is not state or does not
    parse. The leader key comes back as ("leader", "", its Leader or None)."""
    if key == K.LEADER:
        return "leader", "", read_leader(e)
    split = _split(key)
    if split is None or split[0] not in _READERS:
        return None
    attr, read = _READERS[split[0]]
    try:
        return attr, split[1], read(e)
    except _BAD:
        return None


def _assemble(out: dict[str, dict[str, Any]], revision: int, leader: Leader | None) -> ClusterState:
    fields_ = {attr: MappingProxyType(v) for attr, v in out.items() if attr != "maintenance"}
    return ClusterState(revision=revision, leader=leader, maintenance=frozenset(out["maintenance"]), **fields_)


def cluster_state(snapshot: Mapping[str, Entry]) -> ClusterState:
    """Every key of ``snapshot`` read once into its typed record (StateCache's parse with
    nothing remembered: one reading of a snapshot, not two that could drift apart)."""
    return StateCache()._parse(snapshot)


class StateCache:
    """``cluster_state`` of a store's snapshots, parsed once per etcd revision: on an idle
    cluster every loop gets the same snapshot again, and the same typed state with it
    (a ClusterState is read-only, so it is shared).

    When the revision moved, only the keys that changed are parsed again: a key's record
    is kept while its mod_revision and lease are those it was read at (etcd gives every
    change of a key a new mod_revision), so the state is the one ``cluster_state`` gives."""

    def __init__(self) -> None:
        self._rev = 0
        self._state: ClusterState | None = None
        # key -> (mod_revision, lease, what _read_key gave)
        self._keys: dict[str, tuple[int, int, tuple[str, str, Any] | None]] = {}

    def of(self, snapshot: Mapping[str, Entry], revision: int = 0) -> ClusterState:
        """``revision``: the one the snapshot was read at (0: unknown, parse it)."""
        if revision and revision == self._rev and self._state is not None:
            return self._state
        state = self._parse(snapshot)
        if revision:
            self._rev, self._state = revision, state
        return state

    def _parse(self, snapshot: Mapping[str, Entry]) -> ClusterState:
        out: dict[str, dict[str, Any]] = {attr: {} for attr, _ in _READERS.values()}
        revision = 0
        leader: Leader | None = None
        old_get = self._keys.get  # (names bound once: this loop runs over every key of a large cluster)
        keys: dict[str, tuple[int, int, tuple[str, str, Any] | None]] = {}
        for key, e in snapshot.items():
            mod = e.mod_revision
            if mod > revision:
                revision = mod
            c = old_get(key)
            if c is None or c[0] != mod or c[1] != e.lease:
                c = (mod, e.lease, _read_key(key, e))
            keys[key] = c
            got = c[2]
            if got is None:
                continue
            attr = got[0]
            if attr == "leader":
                leader = got[2]
            else:
                out[attr][got[1]] = got[2]
        self._keys = keys
        return _assemble(out, revision, leader)
