"""Golden scenarios: a cluster and timed faults in, the event log out.

``tests/scenarios/<name>/scenario.toml`` describes the cluster (hosts, VMs, rules) and the
actions (vigil.sim.faults); ``expected.log`` is the event log the run produces, one line
per event: virtual seconds, kind, host or VM, message. ``run(path, seed)`` returns that
log; it raises ``InvariantError`` (with the log) when a run breaks what vigil promises:

- never two running copies of a VM, at any instant (the world watches every QEMU);
- no start refused by QEMU's disk lock (the last line held: a layer above failed),
  unless ``[expect] lock_refusals = true``;
- at the end, every VM with power "on" runs exactly once, on a host that holds its
  ownership key, except those in ``[expect] down`` (which must then not run).

The seed only shifts each host's boot by a few hundredths of a second (which agent gets
its lease first, who leads); the same seed gives the same log, byte for byte.
"""
from __future__ import annotations

import asyncio
import logging
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.model import Assignment, DiskSpec, HostGroup, MonitoringSpec, Rule, VMSpec
from vigil.policy.drs_settings import drs_settings
from vigil.policy.host_rules import must_break, resolve
from vigil.sim import clock as vclock
from vigil.sim.agent import SimAgent
from vigil.sim.faults import ScenarioError, apply
from vigil.sim.operator import settings_value
from vigil.sim.store import MemoryStore
from vigil.sim.world import SimHost, World
from vigil.store import keys as K
from vigil.store.etcd import Entry
from vigil.store.events import event_put_op, make_event

SETUP_AT = 2.0  # when the operator creates the VMs (every agent has its lease by then)


class InvariantError(AssertionError):
    def __init__(self, problems: list[str], log: str) -> None:
        super().__init__("; ".join(problems))
        self.problems, self.log = problems, log


@dataclass
class Scenario:
    name: str
    hosts: list[dict[str, Any]]
    vms: list[dict[str, Any]]
    rules: list[dict[str, Any]] = field(default_factory=list)
    hostgroups: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    duration: float = 30.0
    seed: int = 1
    expect: dict[str, Any] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)
    drs: dict[str, Any] = field(default_factory=dict)  # settings/drs at setup (vigil cluster set drs)
    datastores: list[dict[str, Any]] = field(default_factory=list)  # [[datastore]] name, size (MiB), used
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # [admission], [retries], [settings.<name>]


def load(path: str | Path) -> Scenario:
    p = Path(path)
    f = p / "scenario.toml" if p.is_dir() else p
    d = tomllib.loads(f.read_text())
    return Scenario(name=f.parent.name, hosts=d.get("host", []), vms=d.get("vm", []), rules=d.get("rule", []),
                    actions=sorted(d.get("action", []), key=lambda a: float(a["at"])),
                    duration=float(d.get("duration", 30.0)), seed=int(d.get("seed", 1)),
                    expect=d.get("expect", {}), sim=d.get("sim", {}), drs=d.get("drs", {}),
                    datastores=d.get("datastore", []), hostgroups=d.get("hostgroup", []),
                    settings={**{k: d[k] for k in ("admission", "retries") if k in d}, **d.get("settings", {})})


def vm_spec(v: dict[str, Any]) -> VMSpec:
    disks = tuple(
        DiskSpec(name=f"disk{i}", datastore=ds.split("+")[0], path=f"{v['name']}/disk{i}.qcow2",
                 replica=ds.split("+")[1] if "+" in ds else "", size_mb=int(v.get("disk_size", 64)))
        for i, ds in enumerate(v.get("disks", ["ds1"])))
    spec = VMSpec(name=v["name"], memory_mb=int(v.get("memory", 256)), vcpus=int(v.get("vcpus", 1)), disks=disks,
                  restart_priority=v.get("priority", "medium"), isolation_response=v.get("isolation", "power-off"),
                  shutdown_timeout_s=float(v.get("shutdown_timeout", 20.0)), power=v.get("power", "on"),
                  monitoring=MonitoringSpec(**v["monitoring"]) if "monitoring" in v else None,
                  ready=v.get("ready", ""), ready_delay_s=v.get("ready_delay"), ready_timeout_s=v.get("ready_timeout"))
    spec.validate()
    return spec


def rule_of(r: dict[str, Any]) -> Rule:
    return Rule(name=r["name"], kind=r["kind"], vms=tuple(r["vms"]), on=tuple(r.get("on", ())),
                group=r.get("group", ""))


def line(t: float, kind: str, subject: str, message: str) -> str:
    return f"{t:7.2f} {kind:<15} {subject or '-':<6} {message}".rstrip()


class Run:
    """One run of a scenario: the world, its log, the final checks."""

    def __init__(self, sc: Scenario, seed: int) -> None:
        self.sc, self.seed = sc, seed
        quiet = logging.getLogger("vigil")
        if not quiet.handlers:  # the controller's warnings (etcd away...) are the log's business here
            quiet.addHandler(logging.NullHandler())
        self.clock = vclock.VirtualClock()
        self.store = MemoryStore(self.clock.monotonic, sink=(K.EVENTS,))
        self.lines: list[tuple[float, int, str]] = []
        self.world = World(self.clock, self.store, self.log, boot_s=float(sc.sim.get("boot_s", 2.0)),
                           agent_factory=SimAgent)
        self.store.watchers.append((K.EVENTS, self._event))
        self.world.report_load = bool(sc.drs) or any("cpu" in v or "mem_used" in v for v in sc.vms)
        for d in sc.datastores:  # a size makes the agents report the datastore's space
            self.world.ds_size[d["name"]] = float(d["size"])
            self.world.ds_used[d["name"]] = float(d.get("used", 0.0))
            if "latency" in d or "latency_per_iops" in d:  # vigil.sim.blockio
                self.world.ds_latency[d["name"]] = (float(d.get("latency", 1.0)), float(d.get("latency_per_iops", 0.0)))
        groups = {g["name"]: HostGroup(g["name"], tuple(g["hosts"])) for g in sc.hostgroups}
        self.rules = resolve((rule_of(r) for r in sc.rules), groups)
        self.must_broken: list[str] = []  # a VM started where a must VM-host rule forbids
        for i, h in enumerate(sc.hosts):
            self.world.add_host(SimHost(
                name=h["name"], address=f"10.0.0.{i + 1}", memory_mb=int(h.get("memory", 2048)),
                cpus=int(h.get("cpus", 2)), datastores=tuple(h.get("datastores", ["ds1"])),
                powered=False, bmc=str(h.get("fencing", ""))))

    def log(self, t: float, kind: str, subject: str, message: str) -> None:
        self.lines.append((round(t, 2), len(self.lines), line(t, kind, subject, message)))

    def _event(self, e: Entry) -> None:
        v = e.value
        self.log(self.clock.virtual(v["time"]), v["kind"], v.get("vm") or v.get("host", ""), v["message"])
        if v["kind"] in ("vm-started", "vm-migrated") and (why := must_break(v.get("vm", ""), v.get("host", ""), self.rules)):
            self.must_broken.append(f"{v.get('vm')} started on {v.get('host')} against {why}")

    async def _setup(self) -> None:
        await asyncio.sleep(SETUP_AT)
        st = self.store
        for name, table in sorted(self.sc.settings.items()):  # set before the VMs: the cluster's policy
            # [admission]/[retries] tables are validated as the service does; [settings.<name>] is
            # what 'vigil cluster set <name>' writes
            value = settings_value(name, table) if name in ("admission", "retries") else table
            await st.put(K.SETTINGS + name, value)
        for v in self.sc.vms:
            spec = vm_spec(v)
            if "guest_shutdown" in v:
                self.world.guest_shutdown_s[spec.name] = float(v["guest_shutdown"])
            self.world.vm_memory[spec.name] = spec.memory_mb
            if "cpu" in v or "mem_used" in v:  # the load its guest puts on its host (vm-load changes it)
                self.world.vm_load[spec.name] = (float(v.get("cpu", 0.1)), float(v.get("mem_used", spec.memory_mb / 2)))
            if "iops" in v:  # its disks' I/O (vigil.sim.blockio)
                self.world.vm_iops[spec.name] = float(v["iops"])
            if "guest_up" in v:
                self.world.guest_up_s[spec.name] = float(v["guest_up"])
            ev = make_event("vm-created", f"{spec.name} created", vm=spec.name, source="cli", at=self.clock.time())
            ops = [st.put_op(K.VMS + spec.name, spec.to_json()), event_put_op(st, ev)]
            if v.get("ft"):  # vigil vm ft enable (vigil.service.ft_enable)
                ops += [st.put_op(K.FT + spec.name, {"secondary": None, "epoch": 1}),
                        event_put_op(st, make_event("ft-enabled", f"{spec.name}: Fault Tolerance on", vm=spec.name,
                                                    source="cli", at=self.clock.time()))]
            if v.get("on"):
                ops.append(st.put_op(K.ASSIGN + spec.name, Assignment(host=v["on"], gen=1, reason="place").__dict__))
            await st.txn([st.absent(K.VMS + spec.name)], ops)
        if self.sc.drs:
            drs_settings(self.sc.drs)  # refused as the service would
            await st.put(K.SETTINGS + "drs", dict(self.sc.drs))
        for g in self.sc.hostgroups:  # vigil rule group-create
            group = HostGroup(g["name"], tuple(g["hosts"]))
            group.validate()
            await st.create(K.HOSTGROUPS + group.name, group.to_json())
        for r in self.sc.rules:
            rule = rule_of(r)
            rule.validate()
            await st.create(K.RULES + rule.name, rule.to_json())

    async def _at(self, a: dict[str, Any]) -> None:
        await asyncio.sleep(float(a["at"]))
        await apply(self.world, a)

    async def main(self) -> None:
        rnd = random.Random(self.seed)
        loop = asyncio.get_running_loop()
        for h in self.sc.hosts:
            offset = round(rnd.uniform(0.0, 0.3), 2)
            if h.get("powered", True):
                loop.call_later(offset, self.world.boot, h["name"])
        tasks = [loop.create_task(self._setup())] + [loop.create_task(self._at(a)) for a in self.sc.actions]
        await asyncio.sleep(self.sc.duration)
        for t in tasks:
            if t.done() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]

    def text(self) -> str:
        return "".join(s + "\n" for _, _, s in sorted(self.lines))

    def final(self) -> list[str]:
        """The final state as log lines, and the invariant problems."""
        problems = [f"two running copies: {v}" for v in self.world.violations]
        problems += self.must_broken
        problems += [f"a simulated process crashed: {c}" for c in self.world.crashes]
        if self.world.lock_refusals and not self.sc.expect.get("lock_refusals", False):
            problems += [f"start refused by a disk lock: {r}" for r in self.world.lock_refusals]
        down = set(self.sc.expect.get("down", []))
        own = {K.name_of(k, K.OWN): e.value for k, e in self.store._kv.items() if k.startswith(K.OWN)}
        t = self.clock.now
        created = [{"name": a["vm"], "power": a.get("power", "on")} for a in self.sc.actions if a["fault"] == "vm-create"]
        for v in self.sc.vms + created:
            name = v["name"]
            e = self.store._kv.get(K.VMS + name)
            on = e is not None and e.value.get("power") == "on"
            copies = [q for q in self.world.running_copies(name) if not self.world.hosts[q.host].hung]
            where = ", ".join(sorted(q.host for q in copies))
            self.log(t, "final", name, f"running on {where}" if copies else "not running")
            if name in down:
                if copies:
                    problems.append(f"{name} runs on {where}; the scenario expects it down")
            elif on and (len(copies) != 1 or own.get(name) != copies[0].host):
                problems.append(f"{name} should run once, owned by its host: runs on [{where}], owner {own.get(name)}")
        return problems


def run(path: str | Path, seed: int | None = None) -> str:
    """Run the scenario at ``path``; its event log. Raises InvariantError on a broken promise."""
    sc = load(path)
    r = Run(sc, sc.seed if seed is None else seed)
    vclock.run(r.clock, r.main())
    problems = r.final()
    text = r.text()
    if problems:
        raise InvariantError(problems, text)
    return text


__all__ = ["run", "load", "InvariantError", "ScenarioError", "Scenario"]
