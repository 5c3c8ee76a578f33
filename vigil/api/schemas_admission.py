"""Request and response bodies of admission control, restart retries and what-if
(vigil.api.routes.admission), and of a VM's resize (which admission control judges). The bounds are the transport's; what a value means is
vigil.policy.admission_control's to judge, so the CLI and the API refuse with its words."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, Field

from vigil.api.schemas import Strict


class AdmissionIn(Strict):
    policy: Literal["off", "slots", "percentage", "failover-hosts"]
    failures: int = Field(1, ge=0, le=64, description="host failures to tolerate (slots; percentage when derived)")
    cpu_percent: Optional[int] = Field(None, ge=0, le=100, description="percentage: vCPUs reserved (none: derived)")
    memory_percent: Optional[int] = Field(None, ge=0, le=100, description="percentage: memory reserved (none: derived)")
    hosts: list[str] = Field([], max_length=64, description="failover-hosts: the dedicated failover hosts")
    slot_memory_mb: Optional[int] = Field(None, ge=1, le=1024 * 1024, description="slots: the slot's memory (none: the largest VM's)")
    slot_vcpus: Optional[int] = Field(None, ge=1, le=256, description="slots: the slot's vCPUs (none: the largest VM's)")


class AdmissionOut(BaseModel):
    policy: str
    failures: int
    cpu_percent: Optional[int]
    memory_percent: Optional[int]
    hosts: list[str]
    slot_memory_mb: Optional[int]
    slot_vcpus: Optional[int]
    revision: int


class CapacityOut(BaseModel):
    """The cluster as admission control counts it now."""

    setting: dict[str, Any]
    policy: str
    failures: int
    hosts: list[str]
    memory_mb: int
    vcpus: int
    memory_used_mb: int
    vcpus_used: int
    memory_reserved_mb: int
    vcpus_reserved: int
    slot_memory_mb: int
    slot_vcpus: int
    slots: int
    slots_used: int
    slots_reserved: int
    slots_free: int
    failover: list[str]
    tolerates: int = Field(description="host failures the cluster tolerates now")
    ok: bool = Field(description="the policy holds")
    detail: str
    per_host: dict[str, int]


class RetriesIn(Strict):
    delays: list[float] = Field(min_length=1, max_length=32, description="seconds between one retry and the next "
                                "(the last repeats)")
    max_attempts: int = Field(0, ge=0, le=1000, description="retries before giving up (0: never)")


class RetriesOut(BaseModel):
    delays: list[float]
    max_attempts: int
    revision: int


class RestartOut(BaseModel):
    order: int
    vm: str
    host: str
    priority: str
    kind: str
    reason: str


class LeftOut(BaseModel):
    vm: str
    reason: str


class WhatIfOut(BaseModel):
    failed: list[str]
    affected: list[str]
    restarts: list[RestartOut]
    not_restarted: list[LeftOut]


class DrsMoveOut(BaseModel):
    vm: str
    src: str
    dst: str
    mandatory: bool
    reason: str
    imbalance_after: float
    memory_mb: int


class DrsWhatIfOut(BaseModel):
    mode: str
    threshold: int
    imbalance: float
    imbalance_after: float
    tolerated: float
    reason: str
    moves: list[DrsMoveOut]
    disk_reason: str = ""  # Storage DRS: space and latency
    disk_moves: list[dict[str, Any]] = []


class ResizeIn(Strict):
    memory_mb: Optional[int] = Field(None, ge=16, le=1024 * 1024)
    vcpus: Optional[int] = Field(None, ge=1, le=256)
