"""`vigil datastore ...`: the shared file systems, and emptying one (Storage vMotion)."""
from __future__ import annotations

import time
from typing import Optional

import typer
from rich.table import Table

from vigil.cli.client import API_OPT, connect
from vigil.cli.common import JSON_OPT, console, err, friendly, print_json
from vigil.cli.datastore_cluster import latency_cell, space_cell

app = typer.Typer(no_args_is_help=True, help="Datastores")


@app.command("list")
@friendly
def ds_list(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """Datastores known to the cluster and the hosts that reach them."""
    rows = connect(api).get("/datastores")
    if as_json:
        return print_json(rows)
    t = Table(title="datastores")
    for col in ("datastore", "path", "reached by", "cluster", "space", "latency"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["path"], ", ".join(r["hosts"]) or "[red]no host[/]", r.get("cluster") or "-",
                  space_cell(r.get("size_mb"), r.get("used_mb")), latency_cell(r.get("latency_ms"), r.get("iops")))
    console.print(t)


@app.command("evacuate")
@friendly
def ds_evacuate(ds: str, to: Optional[str] = typer.Option(None, "--to", help="target datastore (default: any other)"),
                api: Optional[str] = API_OPT) -> None:
    """Move every running VM's disks off a datastore, live (Storage vMotion, 2 per host at once)."""
    client = connect(api)
    while True:
        r = client.post(f"/datastores/{ds}/evacuate", {"to": to})
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
