"""`vigil datastore-cluster list|set|delete`: the groups of datastores Storage DRS balances
within (its settings: `vigil cluster set drs --space-threshold/--latency-threshold`)."""
from __future__ import annotations

from typing import Any, Optional

import typer
from rich.table import Table

from vigil.cli.client import API_OPT, connect
from vigil.cli.common import JSON_OPT, console, friendly, print_json

app = typer.Typer(no_args_is_help=True, help="Datastore clusters: Storage DRS moves disks within one")


def space_cell(size: Optional[int], used: Optional[int]) -> str:
    if not size or used is None:
        return "-"
    return f"{used / 1024:.1f} / {size / 1024:.1f} GiB ({used / size:.0%})"


def latency_cell(ms: Optional[float], iops: Optional[float]) -> str:
    return "-" if ms is None else f"{ms:.1f} ms ({iops or 0:.0f} op/s)"


@app.command("list")
@friendly
def dsc_list(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """Each datastore cluster: its datastores, their space and their disks' latency."""
    rows: list[dict[str, Any]] = connect(api).get("/datastore-clusters")
    if as_json:
        return print_json(rows)
    if not rows:
        console.print("no datastore cluster: Storage DRS balances over every datastore")
        return
    t = Table(title="datastore clusters")
    for col in ("cluster", "datastores", "space", "latency"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], ", ".join(r["datastores"]), space_cell(r["size_mb"], r["used_mb"]),
                  latency_cell(r["latency_ms"], r["iops"]))
    console.print(t)


@app.command("set")
@friendly
def dsc_set(name: str, datastores: list[str] = typer.Argument(..., help="its datastores (each in one cluster)"),
            api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """Create a datastore cluster, or give it these datastores."""
    r = connect(api).put(f"/datastore-clusters/{name}", {"datastores": datastores})
    if as_json:
        return print_json(r)
    console.print(f"datastore cluster {r['name']}: {', '.join(r['datastores'])}")


@app.command("delete")
@friendly
def dsc_delete(name: str, api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """Remove a datastore cluster (its datastores are in none then)."""
    r = connect(api).delete(f"/datastore-clusters/{name}")
    if as_json:
        return print_json(r)
    console.print(r["message"])
