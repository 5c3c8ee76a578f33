"""A VM's life: create, read, power on or off, delete.

Each operation validates everything first and then writes once, in one transaction, so a
refused request leaves etcd exactly as it was.
"""
from __future__ import annotations

from dataclasses import asdict, replace

from vigil.model import TASK_ACTIVE, Assignment, HostInfo, Task, VMSpec
from vigil.policy.admission_control import Change
import vigil.service.admission as admission
from vigil.service.common import Conflict, Invalid, NotFound, check_revision, ft_delete_ops, known, under, user_event, validated
from vigil.store import keys as K
from vigil.store.etcd import Entry, Store
from vigil.store.events import event_put_op


async def create_vm(store: Store, spec: VMSpec, host: str | None = None) -> None:
    """Write a new VM's spec (and, with ``host``, its first assignment) once every name
    it uses is known."""
    validated(spec)
    snap = await store.snapshot()
    if K.VMS + spec.name in snap:
        raise Conflict(f"a VM named {spec.name!r} already exists")
    known_ds = under(snap, K.DATASTORES)
    for d in spec.disks:
        for ds in d.copies:
            if ds not in known_ds:
                raise Invalid(f"disk {d.name}: unknown datastore {ds!r} (known: {known(known_ds)})")
    nets = {n for e in under(snap, K.HOSTS).values() for n in e.value.get("networks", ())}
    for n in spec.networks:
        if n not in nets:
            raise Invalid(f"unknown network {n!r}: no host has it (known: {known(nets)})")
    ops = [store.put_op(K.VMS + spec.name, spec.to_json()),
           event_put_op(store, user_event("vm-created", f"{spec.name} created", vm=spec.name))]
    compare = [store.absent(K.VMS + spec.name), store.absent(K.ASSIGN + spec.name)]
    if host is not None:
        hosts = under(snap, K.HOSTS)
        if host not in hosts:
            raise Invalid(f"unknown host {host!r} (known: {known(hosts)})")
        if host not in under(snap, K.ALIVE):
            raise Conflict(f"host {host} is not running")
        if (why := admission.failover_host_refusal(snap, host)) is not None:
            raise Conflict(why)
        info = HostInfo.from_json(hosts[host].value)
        missing = spec.datastores - set(info.datastores)
        if missing:
            raise Invalid(f"host {host} does not reach datastore {', '.join(sorted(missing))}")
        ops.append(store.put_op(K.ASSIGN + spec.name, asdict(Assignment(host=host, gen=1, reason="place"))))
    if spec.power == "on":
        more, also = admission.guarded(store, snap, Change(what=f"creating {spec.name} powered on ({_size(spec)})",
                                                           power_on=(spec,)))
        compare, ops = compare + more, ops + also
    if not await store.txn(compare, ops):
        raise Conflict(f"a VM named {spec.name!r} already exists")


def _size(spec: VMSpec) -> str:
    return f"{spec.memory_mb} MiB, {spec.vcpus} vCPU{'s' if spec.vcpus != 1 else ''}"


async def get_vm(store: Store, name: str) -> tuple[VMSpec, Entry]:
    """The VM's spec and its etcd entry (whose revision guards a later write)."""
    e = await store.get(K.VMS + name)
    if e is None:
        raise NotFound(f"no VM named {name!r}")
    return VMSpec.from_json(e.value), e


async def set_power(store: Store, name: str, power: str, revision: int | None = None) -> bool:
    """Ask for a VM to run or not; returns False when it already was so. ``revision``:
    the VM's revision the caller read (refused when it changed since). Not on while a
    live host copies its disks (a repair-disk task): the copy needs it off."""
    spec, e = await get_vm(store, name)
    check_revision(e, revision, f"VM {name}")
    if spec.power == power:
        return False
    guards = [store.unchanged(K.VMS + name, e.mod_revision)]
    also: list = []
    if power == "on":
        te = await store.get(K.TASKS + name)
        t = Task.from_json(te.value) if te else None
        if t is not None and t.kind == "repair-disk" and t.state in TASK_ACTIVE and await store.get(K.ALIVE + t.src):
            raise Conflict(f"{t.src} is repairing {name}'s disks (task {t.id}); power it on once that is done, "
                           f"or cancel it ('vigil task cancel {name}')")
        guards.append(store.unchanged(K.TASKS + name, te.mod_revision if te else 0))
        more, also = admission.guarded(store, await store.snapshot(), Change(
            what=f"powering on {name} ({_size(spec)})", power_on=(replace(spec, power="on"),)))
        guards += more
    new = replace(spec, power=power)
    ev = user_event(f"vm-power-{power}", f"{name}: power {power} requested", vm=name)
    if not await store.txn(guards, [store.put_op(K.VMS + name, new.to_json()), event_put_op(store, ev), *also]):
        raise Conflict(f"{name} changed meanwhile; try again")
    return True


async def delete_vm(store: Store, name: str, force: bool = False, revision: int | None = None) -> None:
    """Delete a VM's spec; it must be powered off and stopped first unless ``force``."""
    spec, e = await get_vm(store, name)
    check_revision(e, revision, f"VM {name}")
    if not force:
        if spec.power == "on":
            raise Conflict(f"{name} is powered on; run 'vigil vm stop {name}' first (or --force)")
        if await store.get(K.OWN + name) is not None:
            raise Conflict(f"{name} is still running somewhere; wait until it stopped (or --force)")
    ev = user_event("vm-deleted", f"{name} deleted", vm=name)
    ok = await store.txn([store.unchanged(K.VMS + name, e.mod_revision)], [
        store.delete_op(K.VMS + name), store.delete_op(K.ASSIGN + name),
        store.delete_op(K.VMSTATUS + name), store.delete_op(K.DISKSTATE + name), *ft_delete_ops(store, name),
        event_put_op(store, ev)])
    if not ok:
        raise Conflict(f"{name} changed meanwhile; try again")


async def resize_vm(store: Store, name: str, memory_mb: int | None = None, vcpus: int | None = None,
                    revision: int | None = None) -> bool:
    """Change a VM's memory or vCPUs; False when they already are so. QEMU keeps its size
    until the VM's next start, but a powered-on VM reserves the new size at once, so a
    larger one passes admission control first."""
    spec, e = await get_vm(store, name)
    check_revision(e, revision, f"VM {name}")
    new = replace(spec, memory_mb=spec.memory_mb if memory_mb is None else memory_mb,
                  vcpus=spec.vcpus if vcpus is None else vcpus)
    validated(new)
    if (new.memory_mb, new.vcpus) == (spec.memory_mb, spec.vcpus):
        return False
    guards, also = [store.unchanged(K.VMS + name, e.mod_revision)], []
    if spec.power == "on":
        more, also = admission.guarded(store, await store.snapshot(), Change(
            what=f"resizing {name} to {_size(new)} (from {_size(spec)})", power_on=(new,)))
        guards += more
    ev = user_event("vm-resized", f"{name}: resized to {_size(new)} (from {_size(spec)}; QEMU takes it at its next "
                    "start)", vm=name)
    if not await store.txn(guards, [store.put_op(K.VMS + name, new.to_json()), event_put_op(store, ev), *also]):
        raise Conflict(f"{name} changed meanwhile; try again")
    return True
