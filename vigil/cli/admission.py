"""`vigil cluster set admission|retries`, `vigil cluster capacity`, `vigil cluster what-if` and
`vigil vm resize`: admission control, restart retries, what the controller would do if
hosts failed, and the one VM change admission control judges that `vigil vm` lacked."""
from __future__ import annotations

from typing import Any, Optional

import typer
from rich.table import Table

from vigil.cli.client import API_OPT, connect
from vigil.cli.cluster import app, set_app
from vigil.cli.common import JSON_OPT, console, friendly, print_json
from vigil.cli.vm import app as vm_app
from vigil.model import SpecError

FIELDS = ("failures", "cpu_percent", "memory_percent", "hosts", "slot_memory_mb", "slot_vcpus")


@set_app.command("admission")
@friendly
def set_admission(
    policy: Optional[str] = typer.Option(None, "--policy", help="slots | percentage | failover-hosts | off "
                                         "(default: keep the present one)"),
    failures: Optional[int] = typer.Option(None, "--failures", help="host failures to tolerate"),
    cpu_percent: Optional[int] = typer.Option(None, "--cpu-percent", help="percentage: vCPUs reserved (else derived)"),
    memory_percent: Optional[int] = typer.Option(None, "--memory-percent", help="percentage: memory reserved (else derived)"),
    hosts: Optional[str] = typer.Option(None, "--hosts", help="failover-hosts: the dedicated hosts, comma separated"),
    slot_memory: Optional[int] = typer.Option(None, "--slot-memory", help="slots: the slot's MiB (else the largest VM's)"),
    slot_cpus: Optional[int] = typer.Option(None, "--slot-cpus", help="slots: the slot's vCPUs (else the largest VM's)"),
    api: Optional[str] = API_OPT,
) -> None:
    """Set the cluster's admission control policy: the room kept free for HA restarts.
    Options not given keep their present value while the policy stays the same."""
    c = connect(api)
    now = c.get("/cluster/admission")
    body: dict[str, Any] = {k: now[k] for k in FIELDS} if policy in (None, now["policy"]) else {}
    body["policy"] = policy or now["policy"]
    given = {"failures": failures, "cpu_percent": cpu_percent, "memory_percent": memory_percent,
             "slot_memory_mb": slot_memory, "slot_vcpus": slot_cpus,
             "hosts": [h for h in hosts.split(",") if h] if hosts is not None else None}
    body |= {k: v for k, v in given.items() if v is not None}
    if body["policy"] != "failover-hosts":
        body.pop("hosts", None)
    out = c.put("/cluster/admission", body)
    console.print(f"admission control: [bold]{describe(out)}[/]")


def describe(s: dict[str, Any]) -> str:
    p = s["policy"]
    if p == "slots":
        slot = [f"{s['slot_memory_mb']} MiB" if s.get("slot_memory_mb") else "",
                f"{s['slot_vcpus']} vCPUs" if s.get("slot_vcpus") else ""]
        fixed = " / ".join(x for x in slot if x)
        return f"slots, {s['failures']} host failure(s) to tolerate" + (f", slot {fixed}" if fixed else "")
    if p == "percentage":
        mem = f"{s['memory_percent']}%" if s.get("memory_percent") is not None else "derived"
        cpu = f"{s['cpu_percent']}%" if s.get("cpu_percent") is not None else "derived"
        return f"percentage, memory {mem}, CPU {cpu} reserved ({s['failures']} host failure(s) when derived)"
    if p == "failover-hosts":
        return "failover hosts " + ", ".join(s["hosts"])
    return "off"


@set_app.command("retries")
@friendly
def set_retries(
    delays: str = typer.Option(..., "--delays", help="seconds between retries, comma separated (the last repeats)"),
    max_attempts: int = typer.Option(0, "--max-attempts", help="retries before giving up (0: never)"),
    api: Optional[str] = API_OPT,
) -> None:
    """When a VM whose start failed is tried again (vSphere's: --delays 120,240,480,960 --max-attempts 5)."""
    try:
        values = [float(x) for x in delays.split(",") if x.strip()]
    except ValueError:
        raise SpecError(f"--delays {delays!r}: expected seconds, comma separated") from None
    out = connect(api).put("/cluster/retries", {"delays": values, "max_attempts": max_attempts})
    never = "never give up" if not out["max_attempts"] else f"give up after {out['max_attempts']}"
    console.print(f"restart retries: after {', '.join(f'{d:g}' for d in out['delays'])} s; {never}")


@app.command("capacity")
@friendly
def capacity(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """Admission control's figures: slots (or reserved shares), used, free, and how many
    host failures the cluster tolerates now."""
    c = connect(api).get("/cluster/capacity")
    if as_json:
        return print_json(c)
    t = Table(show_header=False, title=f"capacity: admission control {describe(c['setting'])}")
    rows = [("hosts counted", ", ".join(c["hosts"]) or "none"),
            ("memory", f"{c['memory_used_mb']} of {c['memory_mb']} MiB used"),
            ("vCPUs", f"{c['vcpus_used']} of {c['vcpus']} used")]
    if c["policy"] == "slots":
        rows += [("slot", f"{c['slot_memory_mb']} MiB, {c['slot_vcpus']} vCPU(s)"),
                 ("slots", f"{c['slots']} in all: {c['slots_used']} used, {c['slots_reserved']} reserved, "
                           f"{c['slots_free']} free"),
                 ("per host", ", ".join(f"{h} {n}" for h, n in sorted(c["per_host"].items())))]
    elif c["policy"] == "percentage":
        rows += [("reserved", f"{c['memory_reserved_mb']} MiB memory, {c['vcpus_reserved']} vCPUs")]
    elif c["policy"] == "failover-hosts":
        rows += [("failover hosts", ", ".join(c["failover"]) or "none running"),
                 ("held back", f"{c['memory_reserved_mb']} MiB, {c['vcpus_reserved']} vCPUs")]
    rows += [("tolerates now", f"{c['tolerates']} host failure(s)"),
             ("policy holds", "[green]yes[/]" if c["ok"] else "[red]no[/]: actions that take room are refused"),
             ("figures", c["detail"])]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


@app.command("what-if")
@friendly
def what_if(fail: list[str] = typer.Option([], "--fail", help="a host to fail (repeatable)"),
            drs: bool = typer.Option(False, "--drs", help="what DRS would do now, on the present load"),
            api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """Where every VM of the failed hosts would restart, in what order, and which would
    not and why: the controller's own plan on the present state. With --drs, the moves a
    DRS round would recommend now. Nothing is changed."""
    if not fail and not drs:
        raise SpecError("name a host to fail (--fail HOST) or ask what DRS would do (--drs)")
    client = connect(api)
    if drs:
        d = client.get("/cluster/what-if/drs")
        if as_json and not fail:
            return print_json(d)
        _print_drs(d)
    if not fail:
        return
    w = client.get("/cluster/what-if", fail=fail)
    if as_json:
        return print_json(w)
    if not w["affected"]:
        console.print(f"{', '.join(w['failed'])}: no powered-on VM runs there; nothing would restart")
        return
    t = Table(title=f"if {', '.join(w['failed'])} failed now")
    for col in ("#", "VM", "to", "priority", "why"):
        t.add_column(col)
    for r in w["restarts"]:
        t.add_row(str(r["order"]), r["vm"], r["host"], r["priority"], r["reason"])
    console.print(t)
    for x in w["not_restarted"]:
        console.print(f"[red]not restarted[/] {x['vm']}: {x['reason']}")


def _print_drs(d: dict) -> None:
    console.print(f"DRS now (mode {d['mode']}, threshold {d['threshold']}): imbalance {d['imbalance']:.3f}, "
                  f"tolerated {d['tolerated']:.3f}; {d['reason']}")
    if d.get("disk_reason"):
        console.print(f"Storage DRS now: {d['disk_reason']}", highlight=False)
    if d.get("disk_moves"):
        k = Table(title="Storage DRS would move")
        for col in ("VM", "disk", "from", "to", "size", "why"):
            k.add_column(col)
        for m in d["disk_moves"]:
            k.add_row(m["vm"], m["disk"], m["src"], m["dst"], f"{m['size_mb']} MiB", m["reason"])
        console.print(k)
    if not d["moves"]:
        return
    t = Table(title="DRS would move")
    for col in ("VM", "from", "to", "memory", "imbalance after", "why"):
        t.add_column(col)
    for m in d["moves"]:
        t.add_row(m["vm"] + (" (mandatory)" if m["mandatory"] else ""), m["src"], m["dst"], f"{m['memory_mb']} MiB",
                  f"{m['imbalance_after']:.3f}", m["reason"])
    console.print(t)


@vm_app.command("resize")
@friendly
def vm_resize(name: str, memory: Optional[int] = typer.Option(None, "--memory", "-m", help="MiB"),
              vcpus: Optional[int] = typer.Option(None, "--vcpus"), api: Optional[str] = API_OPT) -> None:
    """Change a VM's memory or vCPUs; QEMU takes them at the VM's next start. A powered-on
    VM reserves them at once, so admission control may refuse a larger size."""
    if memory is None and vcpus is None:
        raise SpecError("give --memory or --vcpus")
    console.print(connect(api).post(f"/vms/{name}/resize", {"memory_mb": memory, "vcpus": vcpus})["message"])
