"""Rules on VMs (affinity, anti-affinity, restart dependencies, VM-host rules) and the
host groups VM-host rules name: plain data, validated, as stored in etcd."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vigil.names import SpecError, check_name


RULE_KINDS = ("anti-affinity", "affinity")
# a VM-VM restart dependency: the rule's ``vms`` start only once every VM in ``on`` is ready
DEPENDENCY_KINDS = ("depends-on",)
# VM-host rules: the rule's ``vms`` and the hosts of host group ``group``
HOST_RULE_KINDS = ("must-run-on", "should-run-on", "must-not-run-on", "should-not-run-on")
ALL_RULE_KINDS = RULE_KINDS + DEPENDENCY_KINDS + HOST_RULE_KINDS


@dataclass(frozen=True)
class Rule:
    """A rule on VMs: anti-affinity keeps the VMs on different hosts, affinity on one host;
    depends-on restarts ``vms`` only once those ``on`` are ready (vigil.policy.orchestration);
    the VM-host kinds keep ``vms`` on or off the hosts of host group ``group``
    (vigil.policy.host_rules). ``hosts`` is not stored: the controller fills it in from the
    group each cycle, so that placement needs the rules alone."""

    name: str
    kind: str
    vms: tuple[str, ...]
    on: tuple[str, ...] = ()
    group: str = ""
    hosts: frozenset[str] | None = None

    def validate(self) -> None:
        check_name("rule", self.name)
        if self.kind not in ALL_RULE_KINDS:
            raise SpecError(f"rule {self.name}: kind must be one of {', '.join(ALL_RULE_KINDS)}")
        for v in self.vms + self.on:
            check_name("VM", v)
        if self.kind in RULE_KINDS:
            if len(set(self.vms)) < 2:
                raise SpecError(f"rule {self.name}: name at least two different VMs")
        elif not self.vms:
            raise SpecError(f"rule {self.name}: name at least one VM")
        if self.kind in DEPENDENCY_KINDS:
            if not self.on:
                raise SpecError(f"rule {self.name}: name the VMs it depends on")
            if both := sorted(set(self.vms) & set(self.on)):
                raise SpecError(f"rule {self.name}: {', '.join(both)} cannot depend on itself")
        elif self.on:
            raise SpecError(f"rule {self.name}: only a depends-on rule names VMs it depends on")
        if self.kind in HOST_RULE_KINDS:
            check_name("host group", self.group)
        elif self.group:
            raise SpecError(f"rule {self.name}: only a VM-host rule names a host group")

    @property
    def must(self) -> bool:
        return self.kind.startswith("must-")

    def to_json(self) -> dict[str, Any]:
        """What is stored: the VM-VM shape as before, the new fields only when set."""
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "vms": list(self.vms)}
        if self.on:
            d["on"] = list(self.on)
        if self.group:
            d["group"] = self.group
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Rule":
        return cls(name=data["name"], kind=data["kind"], vms=tuple(data["vms"]), on=tuple(data.get("on", ())),
                   group=str(data.get("group", "")))


@dataclass(frozen=True)
class HostGroup:
    """A named set of hosts, for VM-host rules (``hostgroups/<name>``)."""

    name: str
    hosts: tuple[str, ...]

    def validate(self) -> None:
        check_name("host group", self.name)
        if not self.hosts:
            raise SpecError(f"host group {self.name}: name at least one host")
        for h in self.hosts:
            check_name("host", h)
        if len(set(self.hosts)) != len(self.hosts):
            raise SpecError(f"host group {self.name}: a host is named twice")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "hosts": list(self.hosts)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "HostGroup":
        return cls(name=data["name"], hosts=tuple(data.get("hosts", ())))
