"""`vigil task ...`: migrations, disk moves and disk repairs under way; `follow_task` shows
one's progress (`vigil vm migrate`, `move-disk` and `repair-disk` wait on it)."""
from __future__ import annotations

import time
from typing import Optional

import typer
from rich.table import Table

from vigil.cli.client import API_OPT, Api, connect
from vigil.cli.common import JSON_OPT, age, console, err, fail, friendly, print_json

app = typer.Typer(no_args_is_help=True, help="Migrations, disk moves and disk repairs under way")


def follow_task(client: Api, vm: str, task_id: str) -> None:
    """Show a task's progress until it ends; Ctrl-C asks for it to be cancelled."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    cancel_sent = False
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=err) as bar:
        row = bar.add_task(vm, total=100, detail="queued")
        while True:
            try:
                t = client.get(f"/tasks/{task_id}")
                p = t["progress"]
                total = p.get("total") or 0
                done = p.get("transferred") or p.get("offset") or 0
                pct = min(100.0, 100.0 * done / total) if total else 0.0
                detail = t["state"]
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
                bar.update(row, completed=100.0 if t["state"] == "done" else pct, detail=detail)
                if t["state"] in ("done", "failed", "cancelled"):
                    break
                time.sleep(0.25)
            except KeyboardInterrupt:
                if not cancel_sent:
                    client.post(f"/tasks/{task_id}/cancel")
                    cancel_sent = True
                    err.print("cancelling (" + ("the stale copies stay stale" if t["kind"] == "repair-disk"
                                                else "the VM keeps running where it was") + ") ...")
    if t["state"] == "done":
        r = t["progress"]
        extra = ""
        if r.get("downtime_ms") is not None:
            extra = f": downtime {r['downtime_ms']:.0f} ms, total {r.get('total_time_ms', 0) / 1000:.1f} s"
        elif r.get("mb_s") is not None:
            extra = f": {r['mb_s']:.0f} MB/s"
        console.print(f"{vm}: {t['kind']} done ({t['summary']}){extra}")
    elif t["state"] == "cancelled":
        console.print(f"{vm}: {t['kind']} cancelled; " + ("its stale copies stay stale" if t["kind"] == "repair-disk"
                                                         else "the VM runs on as before"))
        raise typer.Exit(1)
    else:
        fail(f"{vm}: {t['kind']} failed: {t['error']}")


@app.command("list")
@friendly
def task_list(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT, all_: bool = typer.Option(False, "--all")) -> None:
    """Tasks under way (and, with --all, the last one of each VM)."""
    ts = connect(api).get("/tasks", all=all_ or None)
    if as_json:
        return print_json([{k: v for k, v in t.items() if k != "summary"} for t in ts])
    tb = Table(title="tasks")
    for col in ("task", "kind", "VM", "what", "state", "progress", "age", "error"):
        tb.add_column(col)
    for t in ts:
        p = t["progress"]
        prog = f"{(p.get('transferred') or p.get('offset') or 0) / 2**20:.0f}/{(p.get('total') or 0) / 2**20:.0f} MiB" if p else "-"
        tb.add_row(t["id"], t["kind"], t["vm"], t["summary"], t["state"], prog, age(t["created"]), t["error"][:50])
    console.print(tb)


@app.command("show")
@friendly
def task_show(vm_or_task: str, api: Optional[str] = API_OPT, as_json: bool = JSON_OPT,
              follow: bool = typer.Option(False, "--follow", "-f", help="show its progress until it ends")) -> None:
    """One task (by id, or a VM's last one): what, where, state and progress."""
    client = connect(api)
    t = client.get(f"/tasks/{vm_or_task}")
    if follow:
        return follow_task(client, t["vm"], t["id"])
    if as_json:
        return print_json({k: v for k, v in t.items() if k != "summary"})
    tb = Table(show_header=False, title=f"task {t['id']}")
    for k in ("kind", "vm", "summary", "state", "reason", "error"):
        tb.add_row(k, str(t[k]) or "-")
    tb.add_row("age", age(t["created"]))
    for k, v in sorted(t["progress"].items()):
        tb.add_row(f"progress {k}", str(v))
    console.print(tb)


@app.command("cancel")
@friendly
def task_cancel(vm_or_task: str, api: Optional[str] = API_OPT) -> None:
    """Cancel a migration, disk move or disk repair; the VM keeps running where it was
    (a repair: its stale copies stay stale)."""
    t = connect(api).post(f"/tasks/{vm_or_task}/cancel")
    console.print(f"{t['vm']}: cancel requested for {t['kind']} task {t['id']}")
