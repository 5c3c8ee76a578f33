"""`vigil vm ...`: define, list, power and delete VMs, move them or their disks live
(vMotion, Storage vMotion), resync their disk copies. `vigil vm ft` is in cli/ft.py."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any, Optional

import typer
from rich.table import Table

from vigil.cli.client import API_OPT, connect
from vigil.cli.common import JSON_OPT, age, console, err, fail, friendly, load_text, print_json
from vigil.cli.ft import app as ft_app
from vigil.cli.ft import ft_summary
from vigil.cli.monitoring_rows import monitoring_rows
from vigil.cli.task import follow_task
from vigil.model import BootSpec, DiskSpec, SpecError, VMSpec

app = typer.Typer(no_args_is_help=True, help="Virtual machines")
app.add_typer(ft_app, name="ft")

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


def lab_guest_boot(workload: bool, dirty_mb: int, guest_ip: str) -> BootSpec:
    """Boot vigil's lab guest image (built, or taken from its cache, here)."""
    from vigil.hypervisor.guest_image import build_guest_image

    img = build_guest_image(progress=lambda m: err.print(f"[dim]{m}[/dim]"))
    cmdline = img.cmdline + (" vigil.workload=1" if workload else "") + (f" vigil.dirty_mb={dirty_mb}" if dirty_mb else "")
    cmdline += f" vigil.ip={guest_ip}" if guest_ip else ""
    return BootSpec(kernel=str(img.kernel), initrd=str(img.initrd), cmdline=cmdline)


@app.command("create")
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
    ready: str = typer.Option("", "--ready", help="restart orchestration: ready when allocated|powered-on|guest|app "
                              "(default: its tier's or the cluster's)"),
    ready_delay: Optional[float] = typer.Option(None, "--ready-delay", help="extra seconds once ready"),
    ready_timeout: Optional[float] = typer.Option(None, "--ready-timeout",
                                                  help="seconds those waiting on it wait at most"),
    balloon: bool = typer.Option(False, "--balloon", help="a virtio-balloon device: the guest's own memory "
                                 "figures count as its memory used"),
    api: Optional[str] = API_OPT,
) -> None:
    """Define a VM; it starts at once unless --stopped."""
    disks = tuple(parse_disk(name, i, d) for i, d in enumerate(disk))
    if guest_ip and not network:
        raise SpecError("--guest-ip needs a --network for the guest's NIC")
    spec = VMSpec(name=name, memory_mb=memory, vcpus=vcpus, disks=disks, networks=tuple(network),
                  restart_priority=priority, isolation_response=isolation, power="off" if stopped else "on",
                  ready=ready, ready_delay_s=ready_delay, ready_timeout_s=ready_timeout, balloon=balloon)
    spec.validate()  # a typo fails here, before the guest image is built or etcd asked
    if guest:
        spec = replace(spec, boot=lab_guest_boot(workload, dirty_mb, guest_ip))
    connect(api).post("/vms", vm_body(spec, host))
    console.print(f"VM [bold]{name}[/] created" + ("" if stopped else f", starting{' on ' + host if host else ''}"))


def vm_body(spec: VMSpec, host: Optional[str]) -> dict[str, Any]:
    """The API's VmIn for a spec."""
    return {"name": spec.name, "memory_mb": spec.memory_mb, "vcpus": spec.vcpus,
            "disks": [{"datastore": d.datastore, "size_mb": d.size_mb, "path": d.path, "replica": d.replica}
                      for d in spec.disks],
            "networks": list(spec.networks), "restart_priority": spec.restart_priority,
            "isolation_response": spec.isolation_response, "shutdown_timeout_s": spec.shutdown_timeout_s,
            "power": spec.power, "host": host,
            "boot": None if spec.boot is None else {"kernel": spec.boot.kernel, "initrd": spec.boot.initrd,
                                                    "cmdline": spec.boot.cmdline},
            **{k: v for k, v in (("ready", spec.ready), ("ready_delay_s", spec.ready_delay_s),
                                 ("ready_timeout_s", spec.ready_timeout_s)) if v not in ("", None)},
            **({"balloon": True} if spec.balloon else {})}


@app.command("list")
@friendly
def vm_list(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """VMs: where they run, their state, their guest heartbeat."""
    vms = connect(api).get("/vms")
    if as_json:
        return print_json(vms)
    t = Table(title="VMs")
    for col in ("VM", "power", "host", "state", "guest", "up", "memory", "load", "priority", "isolation", "note"):
        t.add_column(col)
    for v in vms:
        gst = {"ok": "[green]ok[/]", "lost": "[red]lost[/]"}.get(v["guest"], v["guest"])
        t.add_row(v["name"], v["power"], v["owner"] or v["assigned"] or "-", v["state"], gst,
                  age(v["since"]) if v["state"] == "running" else "-", f"{v['memory_mb']} MiB",
                  load_text(v.get("load")), v["priority"], v["isolation_response"], v["message"][:40])
    console.print(t)


@app.command("show")
@friendly
def vm_show(name: str, api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """Everything about one VM."""
    c = connect(api)
    vm = c.get(f"/vms/{name}")
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
    for row in monitoring_rows(c, name):
        t.add_row(*row)
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


@app.command("start")
@friendly
def vm_start(name: str, api: Optional[str] = API_OPT) -> None:
    """Power a VM on (the controller places it if it has no host)."""
    console.print(connect(api).post(f"/vms/{name}/start")["message"])


@app.command("stop")
@friendly
def vm_stop(name: str, api: Optional[str] = API_OPT) -> None:
    """Shut a VM down (ACPI, then power off after its shutdown timeout)."""
    console.print(connect(api).post(f"/vms/{name}/stop")["message"])


@app.command("delete")
@friendly
def vm_delete(name: str, force: bool = typer.Option(False, "--force"), api: Optional[str] = API_OPT) -> None:
    """Delete a stopped VM (its disks stay on the datastore)."""
    console.print(connect(api).delete(f"/vms/{name}", force=force or None)["message"])


@app.command("migrate")
@friendly
def vm_migrate(
    name: str,
    to: str = typer.Option(..., "--to", help="destination host"),
    datastore: Optional[str] = typer.Option(None, "--datastore", help="also copy the disks to this datastore"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="show progress until done"),
    api: Optional[str] = API_OPT,
) -> None:
    """Live-migrate a running VM to another host (vMotion)."""
    client = connect(api)
    t = client.post(f"/vms/{name}/migrate", {"to": to, "datastore": datastore})
    console.print(f"{name}: migration queued ({t['summary']}), task {t['id']}")
    if wait:
        follow_task(client, name, t["id"])


@app.command("move-disk")
@friendly
def vm_move_disk(
    name: str, disk: str, to: str = typer.Option(..., "--to", help="target datastore"),
    bwlimit: float = typer.Option(0.0, "--bwlimit", help="cap the copy at this many MiB/s (0: no cap)"),
    wait: bool = typer.Option(True, "--wait/--no-wait"), api: Optional[str] = API_OPT,
) -> None:
    """Move a running VM's disk to another datastore (Storage vMotion)."""
    client = connect(api)
    t = client.post(f"/vms/{name}/move-disk", {"disk": disk, "to": to, "bwlimit_mib_s": bwlimit})
    console.print(f"{name}: disk move queued ({t['summary']}), task {t['id']}")
    if wait:
        follow_task(client, name, t["id"])


@app.command("repair-disk")
@friendly
def vm_repair_disk(
    name: str,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="show the resync until every copy is in sync"),
    timeout: float = typer.Option(3600.0, "--timeout", help="seconds to wait at most (a running VM's resync)"),
    api: Optional[str] = API_OPT,
) -> None:
    """Resync the stale copies of a VM's disks kept on two datastores.

    A running VM is resynced by its host's agent, live, as soon as that host reaches both
    datastores again (this asks it to retry now); a powered-off VM's copies are copied by
    a host that mounts both datastores, as a task (see 'vigil task list'; Ctrl-C cancels)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    client = connect(api)
    r = client.post(f"/vms/{name}/repair-disk")
    task = r.get("task")
    console.print(r["message"] if task is None else f"{r['message']}, task {task['id']}")
    if not wait:
        return
    if task is not None:
        follow_task(client, name, task["id"])
        console.print(f"{name}: {task['disk'].replace(',', ', ')} whole again")
        return
    deadline = time.monotonic() + timeout
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=err) as bar:
        row = bar.add_task(name, total=100, detail="waiting")
        while True:
            vm = client.get(f"/vms/{name}")
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
