"""`vigil rule ...`: VM-VM affinity and anti-affinity rules."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from vigil.cli.client import API_OPT, connect
from vigil.cli.common import JSON_OPT, console, friendly, print_json

app = typer.Typer(no_args_is_help=True, help="VM-VM affinity and anti-affinity rules")


@app.command("create")
@friendly
def rule_create(name: str, kind: str = typer.Option(..., "--kind", help="anti-affinity|affinity"),
                vms: str = typer.Option(..., "--vms", help="vm1,vm2,..."), api: Optional[str] = API_OPT) -> None:
    """Keep VMs apart (anti-affinity) or together (affinity)."""
    from vigil.model import Rule

    rule = Rule(name=name, kind=kind, vms=tuple(v for v in vms.split(",") if v))
    rule.validate()
    console.print(connect(api).post("/rules", {"name": rule.name, "kind": rule.kind, "vms": list(rule.vms)})["message"])


@app.command("list")
@friendly
def rule_list(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """VM-VM rules."""
    rules = connect(api).get("/rules")
    if as_json:
        return print_json([{k: v for k, v in r.items() if k != "revision"} for r in rules])
    tb = Table(title="rules")
    for col in ("rule", "kind", "VMs"):
        tb.add_column(col)
    for r in rules:
        tb.add_row(r["name"], r["kind"], ", ".join(r["vms"]))
    console.print(tb)


@app.command("delete")
@friendly
def rule_delete(name: str, api: Optional[str] = API_OPT) -> None:
    """Delete a rule."""
    console.print(connect(api).delete(f"/rules/{name}")["message"])
