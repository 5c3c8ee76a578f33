"""The scenario's timed actions: the lab's faults (vigil.lab.faults) and operator commands,
applied to the simulated world. Each logs one ``fault`` (or ``operator``) line.

Faults, with the keys they take (``for = S`` undoes the fault S seconds later):

    power-off host / power-on host      the host loses power / boots again (``boot_s`` later)
    hang host / unhang host             every process stopped but the watchdog (lab: SIGSTOP);
                                        ``etcd_leader = S``: its etcd member led raft, and
                                        takes itself for the leader S s out of the hang
    agent-kill host / agent-start host  the agent dies; QEMUs run on (``for``: restarted then)
    isolate host / reconnect host       the host's network link down / up (storage stays)
    partition groups=[[..],[..]] / heal hosts split; etcd's quorum is with the first group
    datastore-loss host datastore / datastore-back host datastore   one host's path to it
    datastore-fail datastore / datastore-return datastore           the datastore for everyone
    start-fails host [vm] / start-works host                         QEMU fails to start there
    vm-crash host vm                    the VM's QEMU on that host exits (the agent notices)
    bmc-fail host / bmc-back host       the host's BMC stops answering / answers again
    bmc-slow host                       its BMC takes a power-off but never confirms it

Operator commands: maintenance-enter host / maintenance-exit host, vm-power vm power,
vm-create vm [memory vcpus priority], vm-resize vm [memory vcpus], ft-enable vm, set-admission (the settings/admission
fields: policy, failures, hosts, ...), set-retries (delays, max_attempts), what-if hosts
(logs the answer of ``vigil cluster what-if``, one ``what-if`` line per VM). Those that take
room (power on, create, resize, FT on, maintenance) pass admission control first, as the service's
do (vigil.service.admission.check on the same snapshot): a refusal logs a ``refused`` line
with its figures and writes nothing.
Load: vm-load vm cpu memory iops   the VM's guest now uses ``cpu`` cores and ``memory`` MiB
(and does ``iops`` writes a second on each disk, vigil.sim.blockio);
datastore-fill datastore used    the datastore holds ``used`` MiB besides the VMs' disks;
datastore-latency datastore latency latency_per_iops   its operations take that long now.
Faults inside guests and the monitoring settings: vigil.sim.guest_faults.
"""
from __future__ import annotations

import asyncio
from typing import Any

from dataclasses import replace

from vigil.model import VMSpec
from vigil.policy.admission_control import Change
from vigil.sim.operator import operator, refused
from vigil.sim import guest_faults
from vigil.sim.world import SimHost, World
from vigil.store import keys as K
from vigil.store.events import event_put_op, make_event

UNDO = {"power-off": "power-on", "hang": "unhang", "agent-kill": "agent-start", "isolate": "reconnect",
        "partition": "heal", "datastore-loss": "datastore-back", "datastore-fail": "datastore-return",
        "start-fails": "start-works", "bmc-fail": "bmc-back", "maintenance-enter": "maintenance-exit",
        **guest_faults.UNDO}
OPERATOR = ("maintenance-enter", "maintenance-exit", "vm-power", "vm-create", "ft-enable", "set-admission",
            "set-retries", "what-if", "vm-resize", *guest_faults.OPERATOR)


class ScenarioError(ValueError):
    """The scenario file asks for something the simulator does not know."""


def describe(a: dict[str, Any]) -> tuple[str, str]:
    """(subject, text) of an action's log line."""
    f = a["fault"]
    if f == "partition":
        return "-", "partition " + " | ".join(",".join(g) for g in a["groups"])
    subject = a.get("host") or a.get("vm") or a.get("datastore") or "-"
    keys = ("datastore", "vm", "power", "for", "etcd_leader",
            "cpu", "memory", "used", "vcpus", "priority", "policy", "failures", "hosts",
            "memory_percent", "cpu_percent", "slot_memory_mb", "slot_vcpus", "delays", "max_attempts")
    extra = [f"{k}={_show(a[k])}" for k in keys if k in a and a[k] != subject]
    return subject, " ".join([f] + extra)


async def apply(w: World, a: dict[str, Any]) -> None:
    f = a["fault"]
    subject, text = describe(a)
    w.log(w.clock.now, "operator" if f in OPERATOR else "fault", subject, text)
    if f in ("power-off",):
        w.power_off(_name(w, a), "host powered off")
    elif f == "power-on":
        if not _h(w, a).powered:
            await asyncio.sleep(w.boot_s)
            w.boot(a["host"])
    elif f == "hang":
        w.hang(_name(w, a), float(a.get("etcd_leader", 0.0)))
    elif f == "unhang":
        w.unhang(_name(w, a))
    elif f == "agent-kill":
        w.stop_agent(_name(w, a))
    elif f == "agent-start":
        if _h(w, a).powered and _h(w, a).agent is None:
            w.start_agent(a["host"])
    elif f in ("isolate", "reconnect"):
        _h(w, a).link_up = f == "reconnect"
    elif f == "partition":
        w.groups = [list(g) for g in a["groups"]]
    elif f == "heal":
        w.groups = None
    elif f in ("datastore-loss", "datastore-back"):
        lost = _h(w, a).lost_ds
        (lost.add if f == "datastore-loss" else lost.discard)(a["datastore"])
    elif f in ("datastore-fail", "datastore-return"):
        w.ds_up[a["datastore"]] = f == "datastore-return"
    elif f == "start-fails":
        _h(w, a).fail_start.add(a.get("vm", "*"))
    elif f == "vm-crash":
        if a.get("vm") in _h(w, a).qemus:
            w.log(w.clock.now, "qemu-killed", a["vm"], f"{a['vm']}'s QEMU on {a['host']} exited (crash)")
            w.stop_qemu(a["host"], a["vm"])
    elif f in ("bmc-fail", "bmc-back"):
        _h(w, a).bmc_up = f == "bmc-back"
    elif f == "bmc-slow":
        _h(w, a).bmc_slow = True
    elif f == "start-works":
        _h(w, a).fail_start.clear()
    elif f in ("maintenance-enter", "maintenance-exit"):
        await _maintenance(w, _name(w, a), f == "maintenance-enter")
    elif f == "vm-power":
        await _set_power(w, a["vm"], a["power"])
    elif f == "datastore-fill":
        w.ds_used[a["datastore"]] = float(a["used"])
    elif f == "vm-load":
        old = w.vm_load.get(a["vm"], (0.1, w.vm_memory.get(a["vm"], 256) / 2))
        w.vm_load[a["vm"]] = (float(a.get("cpu", old[0])), float(a.get("memory", old[1])))
        if "iops" in a:
            w.vm_iops[a["vm"]] = float(a["iops"])
    elif f == "datastore-latency":
        old_l = w.ds_latency.get(a["datastore"], (1.0, 0.0))
        w.ds_latency[a["datastore"]] = (float(a.get("latency", old_l[0])), float(a.get("latency_per_iops", old_l[1])))
    elif f in ("vm-create", "ft-enable", "set-admission", "set-retries", "what-if", "vm-resize"):
        await operator(w, a)
    elif f in guest_faults.FAULTS:
        guest_faults.apply_fault(w, a)
    elif f in guest_faults.OPERATOR:
        await guest_faults.apply_operator(w, a)
    else:
        raise ScenarioError(f"unknown fault {f!r}")
    if "for" in a and f in UNDO:
        await asyncio.sleep(float(a["for"]))
        undo = {k: v for k, v in a.items() if k not in ("for", "at")} | {"fault": UNDO[f]}
        await apply(w, undo)


def _show(v: Any) -> str:
    return ",".join(str(x) for x in v) if isinstance(v, list) else str(v)


def _name(w: World, a: dict[str, Any]) -> str:
    name = a.get("host")
    if name not in w.hosts:
        raise ScenarioError(f"fault {a['fault']}: unknown host {name!r}")
    return str(name)


def _h(w: World, a: dict[str, Any]) -> SimHost:
    return w.hosts[_name(w, a)]


async def _maintenance(w: World, host: str, enter: bool) -> None:
    """What ``vigil host maintenance enter|exit`` writes (vigil.service.set_maintenance)."""
    key = K.MAINTENANCE + host
    st = w.store
    if enter and await refused(w, host, Change(what=f"putting {host} in maintenance mode", leave=frozenset({host}))):
        return
    ev = make_event("maintenance-" + ("enter" if enter else "exit"),
                    f"{host} {'enters' if enter else 'leaves'} maintenance mode", host=host, source="cli",
                    at=w.clock.time())
    op = st.put_op(key, {"since": w.clock.time()}) if enter else st.delete_op(key)
    await st.txn([st.absent(key) if enter else st.tx.version(key.encode()) > 0], [op, event_put_op(st, ev)])


async def _set_power(w: World, vm: str, power: str) -> None:
    """What ``vigil vm start|stop`` writes (vigil.service.set_power): the spec, not the assignment."""
    st = w.store
    e = await st.get(K.VMS + vm)
    if e is None:
        raise ScenarioError(f"vm-power: unknown VM {vm!r}")
    if e.value.get("power") == power:
        return
    spec = VMSpec.from_json(e.value)
    if power == "on" and await refused(w, vm, Change(what=f"powering on {vm} ({spec.memory_mb} MiB, {spec.vcpus} "
                                                          f"vCPU{'s' if spec.vcpus != 1 else ''})",
                                                     power_on=(replace(spec, power="on"),))):
        return
    ev = make_event(f"vm-power-{power}", f"{vm}: power {power} requested", vm=vm, source="cli", at=w.clock.time())
    await st.txn([st.unchanged(e.key, e.mod_revision)],
                 [st.put_op(e.key, VMSpec.from_json(e.value).to_json() | {"power": power}), event_put_op(st, ev)])
