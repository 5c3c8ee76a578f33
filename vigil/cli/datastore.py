"""`vigil datastore ...`: the shared file systems, and emptying one (Storage vMotion)."""
from __future__ import annotations

import time
from typing import Any, Optional

import typer
from rich.table import Table

from vigil.cli.common import ETCD_OPT, JSON_OPT, console, err, friendly, print_json, run_store
from vigil.store.etcd import Store

app = typer.Typer(no_args_is_help=True, help="Datastores")


@app.command("list")
@friendly
def ds_list(etcd: Optional[str] = ETCD_OPT, as_json: bool = JSON_OPT) -> None:
    """Datastores known to the cluster and the hosts that reach them."""
    from vigil import service

    async def go(store: Store) -> Any:
        return await service.datastores(store), await service.cluster(store)

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


@app.command("evacuate")
@friendly
def ds_evacuate(ds: str, to: Optional[str] = typer.Option(None, "--to", help="target datastore (default: any other)"),
                etcd: Optional[str] = ETCD_OPT) -> None:
    """Move every running VM's disks off a datastore, live (Storage vMotion, 2 per host at once)."""
    from vigil import service

    while True:
        r = run_store(etcd, lambda s: service.evacuation_step(s, ds, to))
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
