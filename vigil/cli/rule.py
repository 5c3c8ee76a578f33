"""`vigil rule ...`: VM-VM affinity and anti-affinity rules."""
from __future__ import annotations

from dataclasses import asdict
from typing import Optional

import typer
from rich.table import Table

from vigil.cli.common import ETCD_OPT, JSON_OPT, console, friendly, print_json, run_store

app = typer.Typer(no_args_is_help=True, help="VM-VM affinity and anti-affinity rules")


@app.command("create")
@friendly
def rule_create(name: str, kind: str = typer.Option(..., "--kind", help="anti-affinity|affinity"),
                vms: str = typer.Option(..., "--vms", help="vm1,vm2,..."), etcd: Optional[str] = ETCD_OPT) -> None:
    """Keep VMs apart (anti-affinity) or together (affinity)."""
    from vigil import service
    from vigil.model import Rule

    rule = Rule(name=name, kind=kind, vms=tuple(v for v in vms.split(",") if v))
    run_store(etcd, lambda s: service.create_rule(s, rule))
    console.print(f"rule {name} created")


@app.command("list")
@friendly
def rule_list(etcd: Optional[str] = ETCD_OPT, as_json: bool = JSON_OPT) -> None:
    """VM-VM rules."""
    from vigil import service

    rs = run_store(etcd, lambda s: s.snapshot())
    rules = service.rules(rs)
    if as_json:
        return print_json([asdict(r) for r in rules])
    tb = Table(title="rules")
    for col in ("rule", "kind", "VMs"):
        tb.add_column(col)
    for r in rules:
        tb.add_row(r.name, r.kind, ", ".join(r.vms))
    console.print(tb)


@app.command("delete")
@friendly
def rule_delete(name: str, etcd: Optional[str] = ETCD_OPT) -> None:
    """Delete a rule."""
    from vigil import service

    run_store(etcd, lambda s: service.delete_rule(s, name))
    console.print(f"rule {name} deleted")
