"""The ``vigil`` command line: readable tables, ``--json`` for machines, no tracebacks."""
from __future__ import annotations

import asyncio
import json
import sys
import time
from functools import wraps
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from vigil.config import cluster_endpoints
from vigil.model import DiskSpec, SpecError, VMSpec, BootSpec
from vigil.store.etcd import Store, StoreError, run_with_store

app = typer.Typer(no_args_is_help=True, add_completion=False, help="vigil: HA for QEMU/KVM clusters")
vm_app = typer.Typer(no_args_is_help=True, help="Virtual machines")
host_app = typer.Typer(no_args_is_help=True, help="Hosts")
lab_app = typer.Typer(no_args_is_help=True, help="A real cluster on this machine (root)")
fault_app = typer.Typer(no_args_is_help=True, help="Inject real faults into the lab")
ds_app = typer.Typer(no_args_is_help=True, help="Datastores")
app.add_typer(vm_app, name="vm")
app.add_typer(host_app, name="host")
app.add_typer(lab_app, name="lab")
app.add_typer(ds_app, name="datastore")
lab_app.add_typer(fault_app, name="fault")

# Not a terminal (pipes, CI logs): do not squeeze tables into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
ETCD_OPT = typer.Option(None, "--etcd", envvar="VIGIL_ETCD", help="etcd endpoints, comma separated")
JSON_OPT = typer.Option(False, "--json", help="machine-readable output")


def fail(msg: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(code)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn vigil's own errors into one clear line and exit code 1, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from vigil.lab.layout import LabError

        try:
            return fn(*args, **kwargs)
        except (SpecError, LabError) as e:
            fail(str(e))
        except StoreError as e:
            fail(f"cannot reach etcd: {e}\n(is the lab up? 'vigil lab up', or set --etcd)")
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper


def run_store(etcd: Optional[str], fn: Callable[[Store], Any]) -> Any:
    return run_with_store(cluster_endpoints(etcd), fn)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def age(t: float) -> str:
    if not t:
        return "-"
    s = max(0, time.time() - t)
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.0f}h"


# -- agent ----------------------------------------------------------------------------------
@app.command()
def agent(config: str = typer.Option(..., "--config", help="agent config JSON")) -> None:
    """Run the host agent (one per host)."""
    from vigil.agent.agent import main as agent_main

    try:
        agent_main(config)
    except SpecError as e:
        fail(str(e))


# -- hosts ----------------------------------------------------------------------------------
STATE_STYLE = {"running": "green", "failed": "red", "isolated": "yellow", "partitioned": "yellow",
               "agent-down": "yellow", "unknown": "dim", "maintenance": "cyan"}


@host_app.command("list")
@friendly
def host_list(etcd: Optional[str] = ETCD_OPT, as_json: bool = JSON_OPT) -> None:
    """Hosts, their state as the controller sees it, and the VMs they own."""
    from vigil import ops

    c = run_store(etcd, ops.cluster)
    if as_json:
        return print_json(c["hosts"])
    t = Table(title=f"hosts (leader: {c['leader'] or 'none'})")
    for col in ("host", "address", "state", "lease", "memory", "cpus", "datastores", "accel", "VMs"):
        t.add_column(col)
    for h in c["hosts"]:
        st = h["state"]
        t.add_row(h["name"] + (" *" if h["leader"] else ""), h["address"],
                  f"[{STATE_STYLE.get(st, 'white')}]{st}[/]", "yes" if h["lease"] else "[red]no[/]",
                  f"{h['memory_mb']} MiB", str(h["cpus"]), ",".join(h["datastores"]), h["accel"],
                  ", ".join(h["vms"]) or "-")
    console.print(t)


# -- datastores -----------------------------------------------------------------------------
@ds_app.command("list")
@friendly
def ds_list(etcd: Optional[str] = ETCD_OPT, as_json: bool = JSON_OPT) -> None:
    """Datastores known to the cluster and the hosts that reach them."""
    from vigil import ops

    async def go(store: Store) -> Any:
        return await ops.datastores(store), await ops.cluster(store)

    dss, c = run_store(etcd, go)
    rows = [{"name": n, "path": d.path, "hosts": [h["name"] for h in c["hosts"] if n in h["datastores"]]}
            for n, d in sorted(dss.items())]
    if as_json:
        return print_json(rows)
    t = Table(title="datastores")
    for col in ("datastore", "path", "reached by"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["path"], ", ".join(r["hosts"]) or "[red]no host[/]")
    console.print(t)


@ds_app.command("evacuate")
@friendly
def ds_evacuate(ds: str, to: Optional[str] = typer.Option(None, "--to", help="target datastore (default: any other)"),
                etcd: Optional[str] = ETCD_OPT) -> None:
    """Move every running VM's disks off a datastore, live (Storage vMotion, 2 per host at once)."""
    from vigil import ops

    while True:
        r = run_store(etcd, lambda s: ops.evacuation_step(s, ds, to))
        for q in r["queued"]:
            console.print(f"queued {q}")
        if not r["queued"] and not r["waiting"]:
            break
        time.sleep(1)
    for b in r["blocked"]:
        err.print(f"[yellow]left on {ds}:[/] {b}")
    if r["blocked"]:
        raise typer.Exit(1)
    console.print(f"datastore {ds} holds no disk of a running VM any more")


# -- VMs ------------------------------------------------------------------------------------
DISK_FORMAT = "DATASTORE[+REPLICA]:SIZE_MB[:PATH]"


def parse_disk(vm: str, i: int, text: str) -> DiskSpec:
    """DATASTORE[+REPLICA]:SIZE_MB[:PATH], PATH relative to the datastore(s); with
    +REPLICA the disk is kept on both datastores and survives the loss of either."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[1].isdigit() or parts[0].count("+") > 1:
        raise SpecError(f"--disk {text!r}: expected {DISK_FORMAT}")
    ds, _, replica = parts[0].partition("+")
    path = parts[2] if len(parts) == 3 else f"{vm}/disk{i}.qcow2"
    return DiskSpec(name=f"disk{i}", datastore=ds, path=path, size_mb=int(parts[1]), replica=replica)


@vm_app.command("create")
@friendly
def vm_create(
    name: str,
    memory: int = typer.Option(128, "--memory", "-m", help="MiB"),
    vcpus: int = typer.Option(1, "--vcpus"),
    disk: list[str] = typer.Option([], "--disk", help=f"{DISK_FORMAT} (repeatable; +REPLICA keeps a "
                                   "second copy on another datastore)"),
    priority: str = typer.Option("medium", "--priority", help="highest|high|medium|low|lowest|disabled"),
    isolation: str = typer.Option("power-off", "--isolation-response", help="leave-powered-on|power-off|shutdown"),
    host: Optional[str] = typer.Option(None, "--host", help="start on this host (else the controller places it)"),
    guest: bool = typer.Option(True, "--lab-guest/--no-lab-guest", help="boot vigil's lab guest image"),
    workload: bool = typer.Option(False, "--workload", help="the lab guest writes numbered records to its disk"),
    dirty_mb: int = typer.Option(0, "--dirty-mb", help="the lab guest keeps rewriting this much memory"),
    network: list[str] = typer.Option([], "--network", help="a NIC on this VM network (repeatable)"),
    guest_ip: str = typer.Option("", "--guest-ip", help="the lab guest's address on its first network (ADDR/PREFIX)"),
    stopped: bool = typer.Option(False, "--stopped", help="create powered off"),
    etcd: Optional[str] = ETCD_OPT,
) -> None:
    """Define a VM; it starts at once unless --stopped."""
    from vigil import ops

    disks = tuple(parse_disk(name, i, d) for i, d in enumerate(disk))
    if guest_ip and not network:
        raise SpecError("--guest-ip needs a --network for the guest's NIC")
    boot = None
    if guest:
        from vigil.lab.guest_image import build_guest_image

        img = build_guest_image(progress=lambda m: err.print(f"[dim]{m}[/dim]"))
        cmdline = img.cmdline + (" vigil.workload=1" if workload else "") + (f" vigil.dirty_mb={dirty_mb}" if dirty_mb else "")
        cmdline += f" vigil.ip={guest_ip}" if guest_ip else ""
        boot = BootSpec(kernel=str(img.kernel), initrd=str(img.initrd), cmdline=cmdline)
    spec = VMSpec(name=name, memory_mb=memory, vcpus=vcpus, disks=disks, boot=boot, networks=tuple(network),
                  restart_priority=priority, isolation_response=isolation, power="off" if stopped else "on")
    run_store(etcd, lambda s: ops.create_vm(s, spec, host))
    console.print(f"VM [bold]{name}[/] created" + ("" if stopped else f", starting{' on ' + host if host else ''}"))


@vm_app.command("list")
@friendly
def vm_list(etcd: Optional[str] = ETCD_OPT, as_json: bool = JSON_OPT) -> None:
    """VMs: where they run, their state, their guest heartbeat."""
    from vigil import ops

    c = run_store(etcd, ops.cluster)
    if as_json:
        return print_json(c["vms"])
    t = Table(title="VMs")
    for col in ("VM", "power", "host", "state", "guest", "up", "memory", "priority", "isolation", "note"):
        t.add_column(col)
    for v in c["vms"]:
        gst = {"ok": "[green]ok[/]", "lost": "[red]lost[/]"}.get(v["guest"], v["guest"])
        t.add_row(v["name"], v["power"], v["owner"] or v["assigned"] or "-", v["state"], gst,
                  age(v["since"]) if v["state"] == "running" else "-", f"{v['memory_mb']} MiB",
                  v["priority"], v["isolation_response"], v["message"][:40])
    console.print(t)


@vm_app.command("show")
@friendly
def vm_show(name: str, etcd: Optional[str] = ETCD_OPT, as_json: bool = JSON_OPT) -> None:
    """Everything about one VM."""
    from vigil import ops

    c = run_store(etcd, ops.cluster)
    vm = next((v for v in c["vms"] if v["name"] == name), None)
    if vm is None:
        fail(f"no VM named {name!r}")
    if as_json:
        return print_json(vm)
    t = Table(show_header=False, title=f"VM {name}")
    for k, v in vm.items():
        if k == "ft":
            t.add_row("fault tolerance", ft_summary(v))
            continue
        if k == "disks":
            for d in v:
                t.add_row(f"disk {d['name']}", disk_summary(d))
            continue
        if k == "nics":
            for i, n in enumerate(v):
                t.add_row(f"nic{i}", f"{n['network']} {n['mac']}")
            continue
        t.add_row(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
    console.print(t)


def disk_summary(d: dict[str, Any]) -> str:
    """One line: the disk's path and size, and each copy with its state."""
    parts = []
    for c in d["copies"]:
        state = c["state"]
        if state == "resyncing" and c.get("total"):
            state = f"resyncing {100 * c.get('done', 0) / c['total']:.0f}%"
        colour = {"in-sync": "green", "stale": "red"}.get(c["state"], "yellow")
        parts.append(f"{c['datastore']} [{colour}]{state}[/]" if len(d["copies"]) > 1 else c["datastore"])
    return f"{d['path']}, {d['size_mb']} MiB on " + " + ".join(parts)


def ft_summary(ft: dict[str, Any]) -> str:
    """One line: FT state, secondary and checkpoint figures."""
    state = ft.get("state", "disabled")
    if state == "disabled":
        return "disabled"
    parts = [{"protected": "[green]protected[/]", "unprotected": "[red]unprotected[/]"}.get(state, f"[yellow]{state}[/]")]
    if ft.get("secondary"):
        parts.append(f"secondary {ft['secondary']}")
    if ft.get("checkpoints"):
        parts.append(f"{ft['checkpoints']} checkpoints, every {ft.get('interval_ms', 0):.0f} ms, "
                     f"pause {ft.get('pause_ms', 0):.0f} ms, {ft.get('bytes', 0) / 2**20:.0f} MiB each, "
                     f"output held {ft.get('lag_ms', 0):.0f} ms")
    if ft.get("last_error") and state != "protected":
        parts.append(f"last error: {ft['last_error']}")
    return "; ".join(parts)


ft_app = typer.Typer(no_args_is_help=True, help="Fault Tolerance: a standby copy that takes over without a restart")
vm_app.add_typer(ft_app, name="ft")


@ft_app.command("enable")
@friendly
def ft_enable(name: str, etcd: Optional[str] = ETCD_OPT) -> None:
    """Protect a VM with a secondary on another host, kept in step by checkpoints.

    Each checkpoint copies the VM's whole RAM (no incremental checkpoints without COLO),
    so the interval grows with its memory; the guest's output (console and packets) is
    held until the checkpoint that produced it is safe, up to one interval plus one
    checkpoint; its disk writes are kept in step with the checkpoints."""
    from vigil import ops
    from vigil.hypervisor.ft import MAX_FT_MEMORY_MB

    changed = run_store(etcd, lambda s: ops.ft_enable(s, name))
    console.print(f"{name}: " + ("Fault Tolerance on; the controller places its secondary" if changed
                                 else "Fault Tolerance was on already"))
    console.print(f"[dim]limits: up to {MAX_FT_MEMORY_MB} MiB of RAM; each checkpoint copies the whole RAM, so "
                  "the interval grows with it (measured: ~0.25 s for 128-512 MiB on loopback, ~1 s for 128 MiB "
                  "over TLS between lab hosts; `vigil vm show` gives this VM's); not supported: live migration "
                  "(maintenance hands the VM to its secondary), Storage vMotion, disks on two datastores[/]")


@ft_app.command("disable")
@friendly
def ft_disable(name: str, etcd: Optional[str] = ETCD_OPT) -> None:
    """Turn Fault Tolerance off (the secondary's standbys are quit)."""
    from vigil import ops

    changed = run_store(etcd, lambda s: ops.ft_disable(s, name))
    console.print(f"{name}: " + ("Fault Tolerance off" if changed else "Fault Tolerance was off"))


@vm_app.command("start")
@friendly
def vm_start(name: str, etcd: Optional[str] = ETCD_OPT) -> None:
    """Power a VM on (the controller places it if it has no host)."""
    from vigil import ops

    changed = run_store(etcd, lambda s: ops.set_power(s, name, "on"))
    console.print(f"{name}: " + ("starting" if changed else "already powered on"))


@vm_app.command("stop")
@friendly
def vm_stop(name: str, etcd: Optional[str] = ETCD_OPT) -> None:
    """Shut a VM down (ACPI, then power off after its shutdown timeout)."""
    from vigil import ops

    changed = run_store(etcd, lambda s: ops.set_power(s, name, "off"))
    console.print(f"{name}: " + ("stopping" if changed else "already powered off"))


@vm_app.command("delete")
@friendly
def vm_delete(name: str, force: bool = typer.Option(False, "--force"), etcd: Optional[str] = ETCD_OPT) -> None:
    """Delete a stopped VM (its disks stay on the datastore)."""
    from vigil import ops

    run_store(etcd, lambda s: ops.delete_vm(s, name, force))
    console.print(f"{name}: deleted")


# -- mobility -------------------------------------------------------------------------------
task_app = typer.Typer(no_args_is_help=True, help="Migrations and disk moves under way")
rule_app = typer.Typer(no_args_is_help=True, help="VM-VM affinity and anti-affinity rules")
maint_app = typer.Typer(no_args_is_help=True, help="Maintenance mode")
app.add_typer(task_app, name="task")
app.add_typer(rule_app, name="rule")
host_app.add_typer(maint_app, name="maintenance")


def follow_task(etcd: Optional[str], vm: str, task_id: str) -> None:
    """Show a task's progress until it ends; Ctrl-C asks for it to be cancelled."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vigil import ops

    cancel_sent = False
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=err) as bar:
        row = bar.add_task(vm, total=100, detail="queued")
        while True:
            try:
                t = run_store(etcd, lambda s: ops.get_task(s, vm))
                if t is None or t.id != task_id:
                    fail("the task disappeared")
                p = t.progress
                total = p.get("total") or 0
                done = p.get("transferred") or p.get("offset") or 0
                pct = min(100.0, 100.0 * done / total) if total else 0.0
                detail = t.state
                if p:
                    detail += f"  {done / 2**20:.0f}/{total / 2**20:.0f} MiB"
                    if "passes" in p:
                        detail += f", pass {p['passes']}"
                    if p.get("dirty_rate_mib_s") is not None:
                        detail += f", dirty {p['dirty_rate_mib_s']:.0f} MiB/s"
                    if p.get("expected_downtime_ms") is not None:
                        detail += f", downtime ~{p['expected_downtime_ms']:.0f} ms"
                    if p.get("postcopy"):
                        detail += ", post-copy"
                bar.update(row, completed=100.0 if t.state == "done" else pct, detail=detail)
                if t.state in ("done", "failed", "cancelled"):
                    break
                time.sleep(0.25)
            except KeyboardInterrupt:
                if not cancel_sent:
                    run_store(etcd, lambda s: ops.cancel_task(s, vm))
                    cancel_sent = True
                    err.print("cancelling (the VM keeps running where it was) ...")
    if t.state == "done":
        r = t.progress
        extra = ""
        if r.get("downtime_ms") is not None:
            extra = f": downtime {r['downtime_ms']:.0f} ms, total {r.get('total_time_ms', 0) / 1000:.1f} s"
        elif r.get("mb_s") is not None:
            extra = f": {r['mb_s']:.0f} MB/s"
        console.print(f"{vm}: {t.kind} done ({ops.task_summary(t)}){extra}")
    elif t.state == "cancelled":
        console.print(f"{vm}: {t.kind} cancelled; the VM runs on as before")
        raise typer.Exit(1)
    else:
        fail(f"{vm}: {t.kind} failed: {t.error}")


@vm_app.command("migrate")
@friendly
def vm_migrate(
    name: str,
    to: str = typer.Option(..., "--to", help="destination host"),
    datastore: Optional[str] = typer.Option(None, "--datastore", help="also copy the disks to this datastore"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="show progress until done"),
    etcd: Optional[str] = ETCD_OPT,
) -> None:
    """Live-migrate a running VM to another host (vMotion)."""
    from vigil import ops

    t = run_store(etcd, lambda s: ops.migrate_vm(s, name, to, datastore))
    console.print(f"{name}: migration queued ({ops.task_summary(t)}), task {t.id}")
    if wait:
        follow_task(etcd, name, t.id)


@vm_app.command("move-disk")
@friendly
def vm_move_disk(
    name: str, disk: str, to: str = typer.Option(..., "--to", help="target datastore"),
    bwlimit: float = typer.Option(0.0, "--bwlimit", help="cap the copy at this many MiB/s (0: no cap)"),
    wait: bool = typer.Option(True, "--wait/--no-wait"), etcd: Optional[str] = ETCD_OPT,
) -> None:
    """Move a running VM's disk to another datastore (Storage vMotion)."""
    from vigil import ops

    t = run_store(etcd, lambda s: ops.move_disk(s, name, disk, to, bwlimit))
    console.print(f"{name}: disk move queued ({ops.task_summary(t)}), task {t.id}")
    if wait:
        follow_task(etcd, name, t.id)


@vm_app.command("repair-disk")
@friendly
def vm_repair_disk(
    name: str,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="show the resync until every copy is in sync"),
    timeout: float = typer.Option(3600.0, "--timeout", help="seconds to wait at most"),
    etcd: Optional[str] = ETCD_OPT,
) -> None:
    """Resync the stale copies of a VM's disks kept on two datastores.

    A running VM is resynced by its host's agent, live, as soon as that host reaches both
    datastores again (this asks it to retry now); a powered-off VM's copy is copied here,
    from the good copy, if this machine mounts both datastores."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vigil import ops

    console.print(run_store(etcd, lambda s: ops.repair_disk(s, name)))
    if not wait:
        return
    deadline = time.monotonic() + timeout
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=err) as bar:
        row = bar.add_task(name, total=100, detail="waiting")
        while True:
            vm = next((v for v in run_store(etcd, ops.cluster)["vms"] if v["name"] == name), None)
            if vm is None:
                fail(f"VM {name} disappeared")
            copies = [c for d in vm["disks"] for c in d["copies"]]
            behind = [c for c in copies if c["state"] != "in-sync"]
            if not behind:
                bar.update(row, completed=100, detail="in sync")
                break
            c = behind[0]
            pct = 100.0 * c.get("done", 0) / c["total"] if c.get("total") else 0.0
            bar.update(row, completed=min(pct, 99.0), detail=f"{c['datastore']}: {c['state']}")
            if time.monotonic() > deadline:
                fail(f"{name}: still not in sync after {timeout:.0f}s")
            time.sleep(0.5)
    console.print(f"{name}: every disk copy in sync")


@task_app.command("list")
@friendly
def task_list(etcd: Optional[str] = ETCD_OPT, as_json: bool = JSON_OPT, all_: bool = typer.Option(False, "--all")) -> None:
    """Tasks under way (and, with --all, the last one of each VM)."""
    from dataclasses import asdict

    from vigil import ops
    from vigil.model import TASK_ACTIVE

    ts = [t for t in run_store(etcd, ops.tasks) if all_ or t.state in TASK_ACTIVE]
    if as_json:
        return print_json([asdict(t) for t in ts])
    tb = Table(title="tasks")
    for col in ("task", "kind", "VM", "what", "state", "progress", "age", "error"):
        tb.add_column(col)
    for t in ts:
        p = t.progress
        prog = f"{(p.get('transferred') or p.get('offset') or 0) / 2**20:.0f}/{(p.get('total') or 0) / 2**20:.0f} MiB" if p else "-"
        tb.add_row(t.id, t.kind, t.vm, ops.task_summary(t), t.state, prog, age(t.created), t.error[:50])
    console.print(tb)


@task_app.command("cancel")
@friendly
def task_cancel(vm_or_task: str, etcd: Optional[str] = ETCD_OPT) -> None:
    """Cancel a migration or disk move; the VM keeps running where it was."""
    from vigil import ops

    t = run_store(etcd, lambda s: ops.cancel_task(s, vm_or_task))
    console.print(f"{t.vm}: cancel requested for {t.kind} task {t.id}")


@maint_app.command("enter")
@friendly
def maintenance_enter(host: str, etcd: Optional[str] = ETCD_OPT) -> None:
    """Move every VM off the host (live) and keep new VMs away from it."""
    from vigil import ops

    changed = run_store(etcd, lambda s: ops.set_maintenance(s, host, True))
    console.print(f"{host}: " + ("entering maintenance mode (its VMs are being migrated away; see 'vigil host list')"
                                 if changed else "already in maintenance mode"))


@maint_app.command("exit")
@friendly
def maintenance_exit(host: str, etcd: Optional[str] = ETCD_OPT) -> None:
    """Take the host out of maintenance mode."""
    from vigil import ops

    changed = run_store(etcd, lambda s: ops.set_maintenance(s, host, False))
    console.print(f"{host}: " + ("left maintenance mode" if changed else "was not in maintenance mode"))


@rule_app.command("create")
@friendly
def rule_create(name: str, kind: str = typer.Option(..., "--kind", help="anti-affinity|affinity"),
                vms: str = typer.Option(..., "--vms", help="vm1,vm2,..."), etcd: Optional[str] = ETCD_OPT) -> None:
    """Keep VMs apart (anti-affinity) or together (affinity)."""
    from vigil import ops
    from vigil.model import Rule

    rule = Rule(name=name, kind=kind, vms=tuple(v for v in vms.split(",") if v))
    run_store(etcd, lambda s: ops.create_rule(s, rule))
    console.print(f"rule {name} created")


@rule_app.command("list")
@friendly
def rule_list(etcd: Optional[str] = ETCD_OPT, as_json: bool = JSON_OPT) -> None:
    """VM-VM rules."""
    from dataclasses import asdict

    from vigil import ops

    rs = run_store(etcd, lambda s: s.snapshot())
    rules = ops.rules(rs)
    if as_json:
        return print_json([asdict(r) for r in rules])
    tb = Table(title="rules")
    for col in ("rule", "kind", "VMs"):
        tb.add_column(col)
    for r in rules:
        tb.add_row(r.name, r.kind, ", ".join(r.vms))
    console.print(tb)


@rule_app.command("delete")
@friendly
def rule_delete(name: str, etcd: Optional[str] = ETCD_OPT) -> None:
    """Delete a rule."""
    from vigil import ops

    run_store(etcd, lambda s: ops.delete_rule(s, name))
    console.print(f"rule {name} deleted")


# -- events ---------------------------------------------------------------------------------
@app.command()
@friendly
def events(
    follow: bool = typer.Option(False, "--follow", "-f"),
    last: int = typer.Option(50, "--last", "-n"),
    etcd: Optional[str] = ETCD_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """The cluster's event log: every decision and every observed change."""
    from vigil.store import keys as K
    from vigil.store.events import parse_events

    async def go(store: Store) -> None:
        seen: set[float] = set()
        first = True
        while True:
            evs = parse_events(await store.get_prefix(K.EVENTS))
            new = [e for e in evs if (e.time, e.kind, e.vm, e.host) not in seen]
            if first:
                new = new[-last:]
            for e in evs:
                seen.add((e.time, e.kind, e.vm, e.host))  # type: ignore[arg-type]
            for e in new:
                if as_json:
                    sys.stdout.write(json.dumps(e.__dict__, default=str) + "\n")
                else:
                    ts = time.strftime("%H:%M:%S", time.localtime(e.time)) + f".{int(e.time * 1000) % 1000:03d}"
                    console.print(f"[dim]{ts}[/] [bold]{e.kind:<18}[/] {e.message}", highlight=False)
            sys.stdout.flush()
            first = False
            if not follow:
                return
            await asyncio.sleep(0.5)

    run_store(etcd, go)


# -- lab ------------------------------------------------------------------------------------
def progress(msg: str) -> None:
    err.print(f"[cyan]>[/] {msg}", highlight=False)


@lab_app.command("up")
@friendly
def lab_up(
    hosts: int = typer.Option(3, "--hosts", min=1, max=20),
    datastores: int = typer.Option(1, "--datastores", min=1, max=8),
    host_memory: Optional[int] = typer.Option(None, "--host-memory", help="MiB each lab host offers to VMs"),
) -> None:
    """Build a cluster on this machine: namespaces, etcd, datastores, agents."""
    from vigil.lab.lab import Lab, LabConfig

    Lab(progress).up(LabConfig(hosts=hosts, datastores=datastores, memory_mb=host_memory))
    console.print(f"lab up: {hosts} hosts, {datastores} datastore(s). Try 'vigil host list'.")


@lab_app.command("down")
@friendly
def lab_down() -> None:
    """Tear the lab down: processes, namespaces, mounts, data."""
    from vigil.lab.lab import Lab

    Lab(progress).down()
    console.print("lab down")


def fault_text(f: dict) -> str:
    extra = {k: v for k, v in f.items() if k not in ("kind", "host", "since")}
    return f["kind"] + (f"({', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else "")


@lab_app.command("status")
@friendly
def lab_status(as_json: bool = JSON_OPT) -> None:
    """Lab hosts, their processes and active faults."""
    from vigil.lab.lab import Lab

    st = Lab().status()
    if as_json:
        return print_json(st)
    if not st.get("up"):
        console.print("no lab is up")
        return
    t = Table(title=f"lab ({st['subnet']})")
    for col in ("host", "address", "state", "link", "supervisor", "agent", "etcd", "resets", "faults"):
        t.add_column(col)
    for name, h in sorted(st["hosts"].items()):
        t.add_row(name, h["address"], h["state"] or "-", "up" if h["link_up"] else "[red]down[/]",
                  str(h["supervisor_pid"] or "-"), str(h["agent_pid"] or "-"), str(h["etcd_pid"] or "-"),
                  str(h["resets"]), ", ".join(fault_text(f) for f in h["faults"]) or "-")
    console.print(t)


def _lab():  # type: ignore[no-untyped-def]
    from vigil.lab.lab import Lab

    return Lab(progress)


@fault_app.command("power-off")
@friendly
def fault_power_off(host: str) -> None:
    """Cut the power: kill every process of the host, link down."""
    from vigil.lab import faults

    n = faults.power_off(_lab(), host)
    console.print(f"{host}: powered off ({n} processes killed)")


@fault_app.command("power-on")
@friendly
def fault_power_on(host: str) -> None:
    """Power a host back on (it boots its etcd member and agent)."""
    from vigil.lab import faults

    faults.power_on(_lab(), host)
    console.print(f"{host}: powered on")


@fault_app.command("hang")
@friendly
def fault_hang(host: str) -> None:
    """SIGSTOP every process of the host (its watchdog then resets it)."""
    from vigil.lab import faults

    pids = faults.hang(_lab(), host)
    console.print(f"{host}: hung ({len(pids)} processes stopped)")


@fault_app.command("isolate")
@friendly
def fault_isolate(host: str) -> None:
    """Take the host's network link down."""
    from vigil.lab import faults

    faults.isolate(_lab(), host)
    console.print(f"{host}: isolated")


@fault_app.command("partition")
@friendly
def fault_partition(group_a: str, group_b: str) -> None:
    """Drop all traffic between two groups of hosts, e.g. 'host1' 'host2,host3'."""
    from vigil.lab import faults

    faults.partition(_lab(), group_a.split(","), group_b.split(","))
    console.print(f"partitioned {group_a} | {group_b}")


@fault_app.command("blip")
@friendly
def fault_blip(host: str, seconds: float = typer.Option(1.5, "--seconds")) -> None:
    """Link down for a moment, then up."""
    from vigil.lab import faults

    faults.blip(_lab(), host, seconds)
    console.print(f"{host}: link was down {seconds}s")


@fault_app.command("kill-agent")
@friendly
def fault_kill_agent(host: str) -> None:
    """SIGKILL the host's agent only (its supervisor restarts it)."""
    from vigil.lab import faults

    faults.kill_agent(_lab(), host)
    console.print(f"{host}: agent killed")


@fault_app.command("kill-etcd")
@friendly
def fault_kill_etcd(host: str) -> None:
    """SIGKILL the host's etcd member and keep it down until heal."""
    from vigil.lab import faults

    faults.kill_etcd(_lab(), host)
    console.print(f"{host}: etcd member down")


@fault_app.command("datastore-loss")
@friendly
def fault_ds_loss(host: str, datastore: str) -> None:
    """The host loses one datastore (the others still reach it)."""
    from vigil.lab import faults

    faults.datastore_loss(_lab(), host, datastore)
    console.print(f"{host}: lost datastore {datastore}")


@fault_app.command("datastore-fail")
@friendly
def fault_ds_fail(datastore: str) -> None:
    """The datastore's array dies: every I/O on it fails, on every host."""
    from vigil.lab import faults

    faults.datastore_fail(_lab(), datastore)
    console.print(f"datastore {datastore} failed")


@fault_app.command("datastore-return")
@friendly
def fault_ds_return(datastore: str) -> None:
    """A failed datastore comes back (checked with e2fsck); refused while something still
    holds a file on it."""
    from vigil.lab import faults

    faults.datastore_return(_lab(), datastore)
    console.print(f"datastore {datastore} back")


@fault_app.command("heal")
@friendly
def fault_heal(host: Optional[str] = typer.Argument(None)) -> None:
    """Undo every fault (of one host, or all)."""
    from vigil.lab import faults

    undone = faults.heal(_lab(), host)
    console.print(f"healed: {', '.join(fault_text(f) + ' on ' + str(f.get('host', '')) for f in undone) or 'nothing to heal'}")


@app.command()
@friendly
def demo(keep: bool = typer.Option(False, "--keep", help="leave the lab up at the end")) -> None:
    """Build a 3-host lab, run 6 VMs, cut one host's power, show the failover."""
    from vigil.lab.demo import run_demo

    run_demo(console, keep=keep)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
