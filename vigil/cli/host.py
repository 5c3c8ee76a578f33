"""`vigil host ...`: hosts as the controller sees them, and maintenance mode."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from vigil.cli.client import API_OPT, connect
from vigil.cli.common import JSON_OPT, console, friendly, load_text, print_json

app = typer.Typer(no_args_is_help=True, help="Hosts")
maintenance_app = typer.Typer(no_args_is_help=True, help="Maintenance mode")
app.add_typer(maintenance_app, name="maintenance")

STATE_STYLE = {"running": "green", "failed": "red", "isolated": "yellow", "partitioned": "yellow",
               "agent-down": "yellow", "fencing": "red", "unknown": "dim", "maintenance": "cyan"}


@app.command("list")
@friendly
def host_list(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """Hosts, their state as the controller sees it, and the VMs they own."""
    c = connect(api).get("/cluster")
    if as_json:
        return print_json(c["hosts"])
    t = Table(title=f"hosts (leader: {c['leader'] or 'none'})")
    for col in ("host", "address", "state", "lease", "memory", "cpus", "load", "datastores", "accel", "VMs"):
        t.add_column(col)
    for h in c["hosts"]:
        st = h["state"]
        t.add_row(h["name"] + (" *" if h["leader"] else ""), h["address"],
                  f"[{STATE_STYLE.get(st, 'white')}]{st}[/]", "yes" if h["lease"] else "[red]no[/]",
                  f"{h['memory_mb']} MiB", str(h["cpus"]), load_text(h.get("load")), ",".join(h["datastores"]), h["accel"],
                  ", ".join(h["vms"]) or "-")
    console.print(t)


@app.command("fence")
@friendly
def host_fence(host: str, yes: bool = typer.Option(False, "--yes", help="do not ask"),
               api: Optional[str] = API_OPT) -> None:
    """Power HOST off through its BMC (Redfish or IPMI, as its vigil.toml says) and wait
    until the BMC confirms it; its VMs then restart elsewhere. Admin only."""
    if not yes:
        typer.confirm(f"Cut the power of {host} (its VMs stop at once)?", abort=True)
    console.print(connect(api).post(f"/hosts/{host}/fence")["message"])


@maintenance_app.command("enter")
@friendly
def maintenance_enter(host: str, api: Optional[str] = API_OPT) -> None:
    """Move every VM off the host (live) and keep new VMs away from it."""
    console.print(connect(api).put(f"/hosts/{host}/maintenance")["message"])


@maintenance_app.command("exit")
@friendly
def maintenance_exit(host: str, api: Optional[str] = API_OPT) -> None:
    """Take the host out of maintenance mode."""
    console.print(connect(api).delete(f"/hosts/{host}/maintenance")["message"])
