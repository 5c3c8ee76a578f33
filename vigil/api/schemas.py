"""The API's request and response bodies, as pydantic models: they make the OpenAPI
document, and FastAPI checks every request against them before a handler runs.

Bounds here are the transport's (lengths, counts: nothing can grow an etcd request past
its limit); what a value means (a known datastore, a valid priority) is the service
layer's to judge, so that the CLI and the API refuse with the same words.
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

SHORT = 255


class Strict(BaseModel):
    """A request body: unknown fields refused, and no coercion (a JSON false is not 0, a
    "1" is not 1), so what the OpenAPI schema says is exactly what passes."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    errors: list[dict[str, Any]] = []


# -- identity -------------------------------------------------------------------------------
class LoginIn(Strict):
    user: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenLoginIn(LoginIn):
    name: str = Field("cli", min_length=1, max_length=64, description="what the token is for")
    ttl_s: Optional[float] = Field(None, description="lifetime in seconds (none: until revoked)")


class Me(BaseModel):
    user: str
    role: str
    via: str
    csrf_token: str = ""


class UserIn(Strict):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    role: str = Field("auditor", max_length=16, description="admin | operator | auditor")


class PasswordIn(Strict):
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    name: str
    role: str
    created: float


class TokenIn(Strict):
    name: str = Field(min_length=1, max_length=64, description="what the token is for")
    ttl_s: Optional[float] = Field(None, description="lifetime in seconds (none: until revoked)")


class TokenOut(BaseModel):
    id: str
    user: str
    name: str
    created: float
    expires: float = Field(description="0: never")


class NewToken(TokenOut):
    token: str = Field(description="the secret: shown this once")


# -- cluster --------------------------------------------------------------------------------
class HostOut(BaseModel):
    name: str
    revision: int
    address: str
    state: str
    lease: bool
    leader: bool
    maintenance: bool
    memory_mb: int
    memory_used_mb: int
    cpus: int
    vcpus_used: int
    datastores: list[str]
    networks: list[str]
    accel: str
    vms: list[str]
    load: Optional[dict[str, Any]] = None  # measured, smoothed: cpu (cores), memory_used_mb, time


class DiskCopyOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    datastore: str
    state: str


class DiskOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    path: str
    size_mb: int
    copies: list[DiskCopyOut]


class NicOut(BaseModel):
    network: str
    mac: str


class VmOut(BaseModel):
    name: str
    revision: int
    power: str
    memory_mb: int
    vcpus: int
    priority: str
    isolation_response: str
    assigned: Optional[str]
    gen: int
    restart_attempts: int = Field(0, description="start retries since the last placement (the retry schedule's count)")
    owner: Optional[str]
    state: str
    host: Optional[str]
    guest: str
    acked: int
    message: str
    since: float
    disks: list[DiskOut]
    nics: list[NicOut]
    ft: dict[str, Any]
    load: Optional[dict[str, Any]] = None  # measured, smoothed: cpu (cores), memory_mb (resident, or the
    # guest's figure with memory_from: balloon), disks (per index: iops, latency_ms, read/write/flush_ms)
    ready: dict[str, Any] = {}


class EtcdMember(BaseModel):
    endpoint: str
    healthy: bool


class ClusterOut(BaseModel):
    leader: Optional[str]
    revision: int
    time: float
    etcd: list[EtcdMember]
    hosts: list[HostOut]
    vms: list[VmOut]
    memory_mb: int
    memory_used_mb: int
    cpus: int
    vcpus_used: int


class DatastoreOut(BaseModel):
    name: str
    path: str
    hosts: list[str]
    # Storage DRS: its datastore cluster ("": none) and what the agents report of it (None: nothing yet)
    cluster: str = ""
    size_mb: Optional[int] = None
    used_mb: Optional[int] = None
    iops: Optional[float] = None
    latency_ms: Optional[float] = None


class DatastoreIn(Strict):
    name: str = Field(min_length=1, max_length=64)
    path: str = Field(min_length=1, max_length=SHORT)


class EvacuateIn(Strict):
    to: Optional[str] = Field(None, max_length=64, description="target datastore (default: any other)")


class EvacuationOut(BaseModel):
    queued: list[str]
    waiting: list[str]
    blocked: list[str]


# -- VMs ------------------------------------------------------------------------------------
class DiskIn(Strict):
    datastore: str = Field(min_length=1, max_length=64)
    size_mb: int = Field(64, ge=1, le=16 * 1024 * 1024)
    path: Optional[str] = Field(None, max_length=SHORT, description="relative to the datastore")
    replica: str = Field("", max_length=64, description="a second datastore holding a copy")


class BootIn(Strict):
    kernel: str = Field(min_length=1, max_length=SHORT)
    initrd: str = Field("", max_length=SHORT)
    cmdline: str = Field("", max_length=4096)


class VmIn(Strict):
    name: str = Field(min_length=1, max_length=64)
    memory_mb: int = Field(128, ge=1, le=16 * 1024 * 1024)
    vcpus: int = Field(1, ge=1, le=1024)
    disks: list[DiskIn] = Field([], max_length=16)
    networks: list[str] = Field([], max_length=16)
    restart_priority: str = Field("medium", max_length=16)
    isolation_response: str = Field("power-off", max_length=32)
    shutdown_timeout_s: float = Field(20.0, gt=0, le=3600)
    power: str = Field("on", max_length=8)
    host: Optional[str] = Field(None, max_length=64, description="start on this host (else the controller places it)")
    boot: Optional[BootIn] = None
    ready: str = Field("", max_length=16, description="restart orchestration: when it counts as ready "
                       "(allocated | powered-on | guest | app; empty: its tier's or the cluster's)")
    ready_delay_s: Optional[float] = Field(None, ge=0, le=3600)
    ready_timeout_s: Optional[float] = Field(None, ge=0, le=3600)
    balloon: bool = Field(False, description="a virtio-balloon device: the guest's own memory figures count as "
                          "its memory used (else its QEMU's resident size)")


class Done(BaseModel):
    """A request that changes a state: whether it changed anything, and what it says."""

    changed: bool
    message: str


class TaskOut(BaseModel):
    id: str
    kind: str
    vm: str
    src: str
    dst: str
    datastore: str
    disk: str
    state: str
    cancel: bool
    progress: dict[str, Any]
    error: str
    created: float
    updated: float
    reason: str
    bwlimit_mib_s: float
    summary: str


class RepairOut(BaseModel):
    message: str
    task: Optional[TaskOut] = Field(None, description="the repair task, when a host copies a powered-off VM's disks")


class MigrateIn(Strict):
    to: str = Field(min_length=1, max_length=64)
    datastore: Optional[str] = Field(None, max_length=64, description="also copy the disks to this datastore")


class MoveDiskIn(Strict):
    disk: str = Field(min_length=1, max_length=64)
    to: str = Field(min_length=1, max_length=64)
    bwlimit_mib_s: float = Field(0.0, ge=0, le=1e6)


class TargetOut(BaseModel):
    host: str
    ok: bool
    why: str


class RuleIn(Strict):
    name: str = Field(min_length=1, max_length=64)
    kind: str = Field(max_length=32, description="anti-affinity | affinity | depends-on | must-run-on | "
                      "should-run-on | must-not-run-on | should-not-run-on")
    vms: list[str] = Field(min_length=1, max_length=64)
    on: list[str] = Field(default_factory=list, max_length=64, description="depends-on: the VMs they wait for")
    group: str = Field("", max_length=64, description="VM-host rules: the host group")


class RuleOut(BaseModel):
    name: str
    kind: str
    vms: list[str]
    on: list[str] = []
    group: str = ""
    revision: int


class HostGroupIn(Strict):
    name: str = Field(min_length=1, max_length=64)
    hosts: list[str] = Field(min_length=1, max_length=256)


class HostGroupOut(BaseModel):
    name: str
    hosts: list[str]
    revision: int


class EventOut(BaseModel):
    time: float
    kind: str
    message: str
    host: str
    vm: str
    source: str
    user: str
    data: dict[str, Any]


class Health(BaseModel):
    ok: bool
    etcd: bool
