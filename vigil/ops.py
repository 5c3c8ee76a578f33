"""User operations on the cluster (create, start, stop, delete VMs ...), shared by the CLI.

Each operation validates everything first and then writes once, in one transaction, so a
refused request leaves etcd exactly as it was.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

from vigil.model import (TASK_ACTIVE, Assignment, DatastoreSpec, HostInfo, Rule, SpecError, Task, VMSpec, VMStatus,
                         mac_address)
from vigil.store import keys as K
from vigil.store.etcd import Entry, Store
from vigil.policy.replicas import mark_in_sync, stale_map
from vigil.store.events import event_put_op, make_event, record


def _under(snap: dict[str, Entry], prefix: str) -> dict[str, Entry]:
    return {K.name_of(k, prefix): e for k, e in snap.items() if k.startswith(prefix)}


async def datastores(store: Store) -> dict[str, DatastoreSpec]:
    return {n: DatastoreSpec(**e.value) for n, e in (await store.get_prefix(K.DATASTORES)).items()
            for n in [K.name_of(n, K.DATASTORES)]}


async def add_datastore(store: Store, ds: DatastoreSpec) -> bool:
    ds.validate()
    return await store.create(K.DATASTORES + ds.name, asdict(ds))


async def create_vm(store: Store, spec: VMSpec, host: str | None = None) -> None:
    spec.validate()
    snap = await store.snapshot()
    if K.VMS + spec.name in snap:
        raise SpecError(f"a VM named {spec.name!r} already exists")
    known_ds = _under(snap, K.DATASTORES)
    for d in spec.disks:
        for ds in d.copies:
            if ds not in known_ds:
                raise SpecError(
                    f"disk {d.name}: unknown datastore {ds!r} (known: {', '.join(sorted(known_ds)) or 'none'})")
    nets = {n for e in _under(snap, K.HOSTS).values() for n in e.value.get("networks", ())}
    for n in spec.networks:
        if n not in nets:
            raise SpecError(f"unknown network {n!r}: no host has it (known: {', '.join(sorted(nets)) or 'none'})")
    ops = [store.put_op(K.VMS + spec.name, spec.to_json()),
           event_put_op(store, make_event("vm-created", f"{spec.name} created", vm=spec.name, source="cli"))]
    compare = [store.absent(K.VMS + spec.name), store.absent(K.ASSIGN + spec.name)]
    if host is not None:
        hosts = _under(snap, K.HOSTS)
        if host not in hosts:
            raise SpecError(f"unknown host {host!r} (known: {', '.join(sorted(hosts)) or 'none'})")
        if host not in _under(snap, K.ALIVE):
            raise SpecError(f"host {host} is not running")
        info = HostInfo.from_json(hosts[host].value)
        missing = spec.datastores - set(info.datastores)
        if missing:
            raise SpecError(f"host {host} does not reach datastore {', '.join(sorted(missing))}")
        ops.append(store.put_op(K.ASSIGN + spec.name, asdict(Assignment(host=host, gen=1, reason="place"))))
    if not await store.txn(compare, ops):
        raise SpecError(f"a VM named {spec.name!r} already exists")


async def get_vm(store: Store, name: str) -> tuple[VMSpec, Entry]:
    e = await store.get(K.VMS + name)
    if e is None:
        raise SpecError(f"no VM named {name!r}")
    return VMSpec.from_json(e.value), e


async def set_power(store: Store, name: str, power: str) -> bool:
    """Ask for a VM to run or not; returns False when it already was so."""
    spec, e = await get_vm(store, name)
    if spec.power == power:
        return False
    new = replace(spec, power=power)
    ev = make_event(f"vm-power-{power}", f"{name}: power {power} requested", vm=name, source="cli")
    if not await store.txn([store.unchanged(K.VMS + name, e.mod_revision)],
                           [store.put_op(K.VMS + name, new.to_json()), event_put_op(store, ev)]):
        raise SpecError(f"{name} changed meanwhile; try again")
    return True


async def delete_vm(store: Store, name: str, force: bool = False) -> None:
    """Delete a VM's spec; it must be powered off and stopped first unless ``force``."""
    spec, e = await get_vm(store, name)
    if not force:
        if spec.power == "on":
            raise SpecError(f"{name} is powered on; run 'vigil vm stop {name}' first (or --force)")
        if await store.get(K.OWN + name) is not None:
            raise SpecError(f"{name} is still running somewhere; wait until it stopped (or --force)")
    ev = make_event("vm-deleted", f"{name} deleted", vm=name, source="cli")
    ok = await store.txn([store.unchanged(K.VMS + name, e.mod_revision)], [
        store.delete_op(K.VMS + name), store.delete_op(K.ASSIGN + name),
        store.delete_op(K.VMSTATUS + name), store.delete_op(K.DISKSTATE + name), *_ft_delete_ops(store, name),
        event_put_op(store, ev)])
    if not ok:
        raise SpecError(f"{name} changed meanwhile; try again")


async def cluster(store: Store) -> dict[str, Any]:
    """Everything the listings show, from one snapshot."""
    snap = await store.snapshot()
    alive = set(_under(snap, K.ALIVE))
    states = {h: e.value for h, e in _under(snap, K.HOSTSTATE).items()}
    leader = snap.get(K.LEADER)
    hosts = []
    vms_by_host: dict[str, list[str]] = {}
    own = {n: e.value for n, e in _under(snap, K.OWN).items()}
    for n, o in own.items():
        vms_by_host.setdefault(o, []).append(n)
    for h, e in sorted(_under(snap, K.HOSTS).items()):
        info = HostInfo.from_json(e.value)
        hosts.append({
            "name": h, "address": info.address, "state": states.get(h, {}).get("state", "running" if h in alive else "unknown"),
            "lease": h in alive, "leader": bool(leader and leader.value == h), "memory_mb": info.memory_mb,
            "cpus": info.cpus, "datastores": list(info.datastores), "accel": info.accel,
            "vms": sorted(vms_by_host.get(h, [])),
        })
    assign = {n: e.value for n, e in _under(snap, K.ASSIGN).items()}
    status = {n: VMStatus.from_json(e.value) for n, e in _under(snap, K.VMSTATUS).items()}
    vms = []
    for n, e in sorted(_under(snap, K.VMS).items()):
        spec = VMSpec.from_json(e.value)
        st = status.get(n)
        vms.append({
            "name": n, "power": spec.power, "memory_mb": spec.memory_mb, "vcpus": spec.vcpus,
            "priority": spec.restart_priority, "isolation_response": spec.isolation_response,
            "assigned": assign.get(n, {}).get("host"), "gen": assign.get(n, {}).get("gen", 0),
            "owner": own.get(n), "state": st.state if st else "-", "host": st.host if st else None,
            "guest": st.guest if st else "-", "acked": st.acked if st else -1,
            "message": st.message if st else "", "since": st.since if st else 0.0,
            "disks": disk_state(snap, spec),
            "nics": [{"network": n, "mac": mac_address(spec.name, i)} for i, n in enumerate(spec.networks)],
            "ft": ft_state(snap, n),
        })
    return {"hosts": hosts, "vms": vms, "leader": leader.value if leader else None, "time": time.time()}


# -- mobility: live migration, disk moves, maintenance, rules ------------------------------
def _running_owner(snap: dict[str, Entry], name: str) -> str:
    own = snap.get(K.OWN + name)
    st = snap.get(K.VMSTATUS + name)
    if own is None or st is None or st.value.get("state") != "running" or st.value.get("host") != own.value:
        raise SpecError(f"VM {name} is not running")
    return str(own.value)


def _active_task(snap: dict[str, Entry], name: str) -> Task | None:
    e = snap.get(K.TASKS + name)
    if e is None:
        return None
    t = Task.from_json(e.value)
    return t if t.state in TASK_ACTIVE else None


def _host_for_vm(snap: dict[str, Entry], host: str) -> HostInfo:
    hosts = _under(snap, K.HOSTS)
    if host not in hosts:
        raise SpecError(f"unknown host {host!r} (known: {', '.join(sorted(hosts)) or 'none'})")
    if host not in _under(snap, K.ALIVE):
        raise SpecError(f"host {host} is not running")
    if K.MAINTENANCE + host in snap:
        raise SpecError(f"host {host} is in maintenance mode")
    return HostInfo.from_json(hosts[host].value)


def rules(snap: dict[str, Entry]) -> list[Rule]:
    return [Rule.from_json(e.value) for e in _under(snap, K.RULES).values()]


async def migrate_vm(store: Store, name: str, to: str, datastore: str | None = None, reason: str = "user") -> Task:
    """Validate a live migration and queue it; the agents carry it out."""
    from vigil.policy.placement import Load, fits, host_load, rule_conflict

    snap = await store.snapshot()
    if K.VMS + name not in snap:
        raise SpecError(f"no VM named {name!r}")
    spec = VMSpec.from_json(snap[K.VMS + name].value)
    if K.FT + name in snap:
        raise SpecError(f"VM {name} has Fault Tolerance on: its memory is already replicated by checkpoints; "
                        f"turn it off first ('vigil vm ft disable {name}')")
    src = _running_owner(snap, name)
    info = _host_for_vm(snap, to)
    if to == src:
        raise SpecError(f"VM {name} already runs on {to}")
    state = _diskstate(snap, name)
    if state.get("resync"):
        raise SpecError(f"VM {name} is resyncing disk {state['resync'].get('disk')}; migrate it once that is done")
    spec = spec.without_stale(stale_map(state))
    if datastore is not None and spec.replicated:
        raise SpecError(f"VM {name} has disks on two datastores; --datastore moves single-copy disks only")
    if datastore is not None:
        if datastore not in _under(snap, K.DATASTORES):
            raise SpecError(f"unknown datastore {datastore!r}")
        if datastore not in info.datastores:
            raise SpecError(f"host {to} does not reach datastore {datastore}")
    else:
        missing = sorted(spec.datastores - set(info.datastores))
        if missing:
            raise SpecError(f"host {to} does not reach datastore {', '.join(missing)} "
                            f"(use --datastore to copy the disks to one it reaches)")
    assign = {n: e.value["host"] for n, e in _under(snap, K.ASSIGN).items()}
    specs = {n: VMSpec.from_json(e.value) for n, e in _under(snap, K.VMS).items()}
    load = host_load((h, specs[n]) for n, h in assign.items() if n in specs and specs[n].power == "on")
    why = fits(spec, info, load.get(to, Load()))
    if why:
        raise SpecError(f"no room for {name} on {to}: {why}")
    conflict = rule_conflict(name, to, rules(snap), {n: h for n, h in assign.items() if n != name})
    if conflict:
        raise SpecError(f"moving {name} to {to} would break {conflict}")
    return await _queue_task(store, snap, Task(id=f"{name}-{int(time.time() * 1000)}", kind="migrate", vm=name,
                                               src=src, dst=to, datastore=datastore or "", reason=reason))


async def move_disk(store: Store, name: str, disk: str, to: str, bwlimit_mib_s: float = 0.0) -> Task:
    """Validate a Storage vMotion and queue it; the owner's agent carries it out.
    ``bwlimit_mib_s``: cap the copy so that other I/O on the datastores keeps its share."""
    if bwlimit_mib_s < 0:
        raise SpecError(f"--bwlimit must be positive (MiB/s), not {bwlimit_mib_s:g}")
    snap = await store.snapshot()
    if K.VMS + name not in snap:
        raise SpecError(f"no VM named {name!r}")
    spec = VMSpec.from_json(snap[K.VMS + name].value)
    if K.FT + name in snap:
        raise SpecError(f"VM {name} has Fault Tolerance on: its standbys use the disks where they are; "
                        f"turn it off first ('vigil vm ft disable {name}')")
    d = next((x for x in spec.disks if x.name == disk), None)
    if d is None:
        raise SpecError(f"VM {name} has no disk {disk!r} (disks: {', '.join(x.name for x in spec.disks) or 'none'})")
    if d.replica:
        raise SpecError(f"disk {disk} of {name} has copies on {' and '.join(d.copies)}; moving a replicated disk "
                        "is not supported")
    if to not in _under(snap, K.DATASTORES):
        raise SpecError(f"unknown datastore {to!r}")
    if d.datastore == to:
        raise SpecError(f"disk {disk} of {name} is already on {to}")
    src = _running_owner(snap, name)
    if to not in HostInfo.from_json(snap[K.HOSTS + src].value).datastores:
        raise SpecError(f"host {src}, where {name} runs, does not reach datastore {to}")
    return await _queue_task(store, snap, Task(id=f"{name}-{int(time.time() * 1000)}", kind="move-disk", vm=name,
                                               src=src, datastore=to, disk=disk, reason="user",
                                               bwlimit_mib_s=bwlimit_mib_s))


async def _queue_task(store: Store, snap: dict[str, Entry], task: Task) -> Task:
    busy = _active_task(snap, task.vm)
    if busy is not None:
        raise SpecError(f"VM {task.vm} is busy: {busy.kind} task {busy.id} is {busy.state}")
    prev = snap.get(K.TASKS + task.vm)
    task = replace(task, created=time.time(), updated=time.time())
    ev = make_event(f"task-{task.kind}", f"{task.vm}: {task.kind} queued ({task_summary(task)})",
                    vm=task.vm, host=task.src, source="cli", task=task.id)
    ok = await store.txn(
        [store.unchanged(K.TASKS + task.vm, prev.mod_revision if prev else 0),
         store.equals(K.OWN + task.vm, task.src)],
        [store.put_op(K.TASKS + task.vm, asdict(task)), event_put_op(store, ev)])
    if not ok:
        raise SpecError(f"VM {task.vm} changed meanwhile; try again")
    return task


def task_summary(t: Task) -> str:
    if t.kind == "migrate":
        return f"{t.src} -> {t.dst}" + (f", disks to {t.datastore}" if t.datastore else "")
    return f"disk {t.disk} -> {t.datastore} on {t.src}"


async def get_task(store: Store, vm: str) -> Task | None:
    e = await store.get(K.TASKS + vm)
    return Task.from_json(e.value) if e else None


async def cancel_task(store: Store, vm_or_id: str) -> Task:
    tasks = {n: (Task.from_json(e.value), e) for n, e in (await store.get_prefix(K.TASKS)).items()}
    for t, e in tasks.values():
        if (t.vm == vm_or_id or t.id == vm_or_id) and t.state in TASK_ACTIVE:
            if await store.txn([store.unchanged(e.key, e.mod_revision)],
                               [store.put_op(e.key, asdict(replace(t, cancel=True)))]):
                return t
            raise SpecError("the task changed meanwhile; try again")
    raise SpecError(f"no running task for {vm_or_id!r}")


async def tasks(store: Store) -> list[Task]:
    return sorted((Task.from_json(e.value) for e in (await store.get_prefix(K.TASKS)).values()),
                  key=lambda t: t.created)


async def set_maintenance(store: Store, host: str, enter: bool) -> bool:
    snap = await store.snapshot()
    if K.HOSTS + host not in snap:
        hosts = _under(snap, K.HOSTS)
        raise SpecError(f"unknown host {host!r} (known: {', '.join(sorted(hosts)) or 'none'})")
    key = K.MAINTENANCE + host
    if enter == (key in snap):
        return False
    ev = make_event("maintenance-" + ("enter" if enter else "exit"),
                    f"{host} {'enters' if enter else 'leaves'} maintenance mode", host=host, source="cli")
    op = store.put_op(key, {"since": time.time()}) if enter else store.delete_op(key)
    return await store.txn([store.absent(key) if enter else store.tx.version(key.encode()) > 0],
                           [op, event_put_op(store, ev)])


async def create_rule(store: Store, rule: Rule) -> None:
    rule.validate()
    snap = await store.snapshot()
    missing = [v for v in rule.vms if K.VMS + v not in snap]
    if missing:
        raise SpecError(f"rule {rule.name}: no VM named {', '.join(missing)}")
    if not await store.create(K.RULES + rule.name, asdict(rule)):
        raise SpecError(f"a rule named {rule.name!r} already exists")


async def delete_rule(store: Store, name: str) -> None:
    if not await store.delete(K.RULES + name):
        raise SpecError(f"no rule named {name!r}")


async def evacuation_step(store: Store, ds: str, to: str | None = None) -> dict[str, Any]:
    """One round of `vigil datastore evacuate`: queue a disk move for every running VM that
    has a disk on ``ds`` and no task under way. Returns what is left and why."""
    snap = await store.snapshot()
    if K.DATASTORES + ds not in snap:
        raise SpecError(f"unknown datastore {ds!r}")
    if to is not None and K.DATASTORES + to not in snap:
        raise SpecError(f"unknown datastore {to!r}")
    if to == ds:
        raise SpecError("the target datastore is the one being evacuated")
    queued, waiting, blocked = [], [], []
    for name, e in sorted(_under(snap, K.VMS).items()):
        spec = VMSpec.from_json(e.value)
        disk = next((d for d in spec.disks if d.datastore == ds), None)
        if disk is None:
            continue
        if _active_task(snap, name) is not None:
            waiting.append(name)
            continue
        last = snap.get(K.TASKS + name)
        if last is not None:
            lt = Task.from_json(last.value)
            if lt.kind == "move-disk" and lt.disk == disk.name and lt.state in ("failed", "cancelled"):
                blocked.append(f"{name}: its last disk move {lt.state}: {lt.error} "
                               f"(retry with 'vigil vm move-disk {name} {disk.name} --to DS')")
                continue
        try:
            host = _running_owner(snap, name)
        except SpecError:
            blocked.append(f"{name}: not running (move its disks while it runs)")
            continue
        reach = HostInfo.from_json(snap[K.HOSTS + host].value).datastores
        target = to or next((d for d in sorted(reach) if d != ds), None)
        if target is None or target not in reach:
            blocked.append(f"{name}: host {host} reaches no other datastore")
            continue
        try:
            await move_disk(store, name, disk.name, target)
            queued.append(f"{name}/{disk.name} -> {target}")
        except SpecError as err:
            blocked.append(f"{name}: {err}")
    return {"queued": queued, "waiting": waiting, "blocked": blocked}


# -- disks on two datastores -------------------------------------------------------------
def _diskstate(snap: dict[str, Entry], name: str) -> dict[str, Any]:
    e = snap.get(K.DISKSTATE + name)
    return dict(e.value) if e is not None and isinstance(e.value, dict) else {}


def disk_state(snap: dict[str, Entry], spec: VMSpec) -> list[dict[str, Any]]:
    """What ``vm show`` says of each disk: its copies and whether each is in sync."""
    state = _diskstate(snap, spec.name)
    stale = state.get("stale") or {}
    resync = state.get("resync") or {}
    out = []
    for d in spec.disks:
        copies = []
        for ds in d.copies:
            c: dict[str, Any] = {"datastore": ds, "state": "in-sync"}
            s = stale.get(d.name)
            if s and s.get("datastore") == ds:
                c |= {"state": "stale", "since": s.get("since"), "why": s.get("why", "")}
                if resync.get("disk") == d.name:
                    c |= {"state": "resyncing", "done": resync.get("done", 0), "total": resync.get("total", 0)}
            copies.append(c)
        out.append({"name": d.name, "datastore": d.datastore, "replica": d.replica, "path": d.path,
                    "size_mb": d.size_mb, "copies": copies})
    return out


async def repair_disk(store: Store, name: str) -> str:
    """Resync a VM's stale disk copies. A running VM's agent resyncs them on its own once
    it reaches both datastores; this asks it to retry now. A powered-off VM's copies are
    copied here, from its good copy, when this machine mounts both datastores."""
    from vigil.env import dsheartbeat as dshb
    from vigil.hypervisor import replica
    from vigil.hypervisor.qemu import disk_path

    snap = await store.snapshot()
    if K.VMS + name not in snap:
        raise SpecError(f"no VM named {name!r}")
    spec = VMSpec.from_json(snap[K.VMS + name].value)
    if not spec.replicated:
        raise SpecError(f"VM {name} has no disk on two datastores")
    stale = stale_map(_diskstate(snap, name))
    if not stale:
        return f"every disk copy of {name} is in sync"
    if K.OWN + name in snap:
        host = snap[K.OWN + name].value
        reach = set(HostInfo.from_json(snap[K.HOSTS + host].value).datastores) if K.HOSTS + host in snap else set()
        far = sorted({ds for ds in stale.values()} - reach)
        if far:
            raise SpecError(f"{host}, where {name} runs, does not reach datastore {', '.join(far)}; the resync "
                            "starts on its own once it does")
        await store.update(K.DISKSTATE + name, lambda st: {**(st or {}), "repair": time.time()})
        return f"{host} resyncs {', '.join(sorted(stale))} of {name} now"
    if spec.power == "on":
        raise SpecError(f"{name} is being started; try again once it runs")
    paths = {e.key[len(K.DATASTORES):]: e.value.get("path", "") for e in _under(snap, K.DATASTORES).values()}
    done = []
    for d in spec.disks:
        bad = stale.get(d.name)
        if bad is None:
            continue
        good = next(ds for ds in d.copies if ds != bad)
        src, dst = disk_path(d, paths, good), disk_path(d, paths, bad)
        for ds in (good, bad):
            if not dshb.reachable(ds, paths.get(ds, "")):
                raise SpecError(f"datastore {ds} is not mounted here ({paths.get(ds) or 'no path'}); run this on "
                                f"a host that mounts {good} and {bad}")
        await replica.copy_offline(src, dst)
        await store.update(K.DISKSTATE + name, lambda st, dn=d.name: mark_in_sync(st, [dn]))
        await record(store, make_event("disk-resynced", f"{name}: disk {d.name}'s copy on {bad} copied from {good}",
                                       vm=name, disk=d.name, datastore=bad, source="cli"))
        done.append(d.name)
    return f"{name}: {', '.join(done)} whole again"


# -- Fault Tolerance ----------------------------------------------------------------------
def _ft_delete_ops(store: Store, name: str) -> list:
    return [store.delete_op(k + name) for k in (K.FT, K.FTRX, K.FTACK, K.FTSTAT)]


def ft_state(snap: dict[str, Entry], name: str) -> dict[str, Any]:
    """What ``vm show`` says of a VM's FT: disabled | needs-secondary | starting |
    protected | unprotected, the secondary, and the primary's figures."""
    ft = snap.get(K.FT + name)
    if ft is None:
        return {"state": "disabled"}
    sec, epoch = ft.value.get("secondary"), ft.value.get("epoch")
    stat = snap.get(K.FTSTAT + name)
    st = stat.value if stat is not None and stat.value.get("epoch") == epoch and stat.value.get("secondary") == sec else {}
    if sec is None:
        state = "needs-secondary"
    elif not st:
        state = "starting"
    else:
        state = str(st.get("state", "starting"))
    out: dict[str, Any] = {"state": state, "secondary": sec, "epoch": epoch}
    for k in ("checkpoints", "failures", "interval_ms", "pause_ms", "bytes", "lag_ms", "last_error"):
        if k in st:
            out[k] = st[k]
    return out


def ft_limits(spec: VMSpec) -> str | None:
    """Why FT cannot protect this VM, or None."""
    from vigil.hypervisor.ft import MAX_FT_MEMORY_MB

    if spec.memory_mb > MAX_FT_MEMORY_MB:
        return (f"FT supports VMs of up to {MAX_FT_MEMORY_MB} MiB (each checkpoint copies the whole RAM); "
                f"{spec.name} has {spec.memory_mb} MiB")
    if spec.replicated:
        return f"FT does not support disks on two datastores yet ({spec.name} has some)"
    return None


async def ft_enable(store: Store, name: str) -> bool:
    """Turn FT on; the controller places the secondary. False when it was on already."""
    spec, e = await get_vm(store, name)
    why = ft_limits(spec)
    if why:
        raise SpecError(why)
    snap = await store.snapshot()
    if (K.FT + name) in snap:
        return False
    hosts = [HostInfo.from_json(x.value) for x in _under(snap, K.HOSTS).values()]
    reach = [h.name for h in hosts if spec.datastores <= set(h.datastores)]
    if len(reach) < 2:
        raise SpecError(f"FT needs two hosts that reach {', '.join(sorted(spec.datastores))}; "
                        f"only {', '.join(reach) or 'none'} do")
    ev = make_event("ft-enabled", f"{name}: Fault Tolerance on", vm=name, source="cli")
    return await store.txn([store.unchanged(K.VMS + name, e.mod_revision), store.absent(K.FT + name)],
                           [store.put_op(K.FT + name, {"secondary": None, "epoch": 1}), event_put_op(store, ev)])


async def ft_disable(store: Store, name: str) -> bool:
    await get_vm(store, name)
    if await store.get(K.FT + name) is None:
        return False
    ev = make_event("ft-disabled", f"{name}: Fault Tolerance off", vm=name, source="cli")
    return await store.txn([], [*_ft_delete_ops(store, name), event_put_op(store, ev)])
