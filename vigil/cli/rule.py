"""`vigil rule ...`: VM-VM rules (affinity, anti-affinity, depends-on), VM-host rules and
host groups."""
from __future__ import annotations

import re
from typing import Optional

import typer
from rich.table import Table

from vigil.cli.client import API_OPT, connect
from vigil.cli.common import JSON_OPT, console, friendly, print_json

app = typer.Typer(no_args_is_help=True, help="VM-VM and VM-host rules, host groups")


def _names(csv: str) -> tuple[str, ...]:
    return tuple(v for v in csv.split(",") if v)


@app.command("create")
@friendly
def rule_create(name: str,
                kind: str = typer.Option(..., "--kind", help="anti-affinity|affinity|depends-on|must-run-on|"
                                         "should-run-on|must-not-run-on|should-not-run-on"),
                vms: str = typer.Option(..., "--vms", help="vm1,vm2,..."),
                on: str = typer.Option("", "--on", help="depends-on: the VMs they wait for, vm1,vm2,..."),
                group: str = typer.Option("", "--group", help="VM-host rules: the host group"),
                api: Optional[str] = API_OPT) -> None:
    """Keep VMs apart (anti-affinity) or together (affinity), restart them only once others
    are ready (depends-on --on), or keep them on or off a host group (--group)."""
    from vigil.model import Rule

    rule = Rule(name=name, kind=kind, vms=_names(vms), on=_names(on), group=group)
    rule.validate()
    console.print(connect(api).post("/rules", rule.to_json())["message"])


@app.command("list")
@friendly
def rule_list(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """Rules, with what each cannot keep now (see ``vigil rule conflicts``)."""
    c = connect(api)
    rules, problems = c.get("/rules"), c.get("/rules/conflicts")
    if as_json:
        return print_json([{k: v for k, v in r.items() if k != "revision"} for r in rules])
    tb = Table(title="rules")
    for col in ("rule", "kind", "VMs", "on / group", "conflicts"):
        tb.add_column(col)
    for r in rules:
        word = re.compile(rf"(?<![\w.-]){re.escape(r['name'])}(?![\w.-])")
        mine = [p for p in problems if word.search(p)]
        target = ", ".join(r.get("on") or []) or r.get("group", "")
        tb.add_row(r["name"], r["kind"], ", ".join(r["vms"]), target, str(len(mine)) if mine else "")
    console.print(tb)


@app.command("conflicts")
@friendly
def rule_conflicts(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """The rules that cannot all be kept, and VMs that run against a VM-host rule."""
    problems = connect(api).get("/rules/conflicts")
    if as_json:
        return print_json(problems)
    if not problems:
        console.print("no conflicts")
    for p in problems:
        console.print(p)


@app.command("delete")
@friendly
def rule_delete(name: str, api: Optional[str] = API_OPT) -> None:
    """Delete a rule."""
    console.print(connect(api).delete(f"/rules/{name}")["message"])


@app.command("group-create")
@friendly
def group_create(name: str, hosts: str = typer.Option(..., "--hosts", help="host1,host2,..."),
                 api: Optional[str] = API_OPT) -> None:
    """A named set of hosts, for VM-host rules."""
    from vigil.model import HostGroup

    g = HostGroup(name=name, hosts=_names(hosts))
    g.validate()
    console.print(connect(api).post("/hostgroups", g.to_json())["message"])


@app.command("group-list")
@friendly
def group_list(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """Host groups."""
    groups = connect(api).get("/hostgroups")
    if as_json:
        return print_json([{k: v for k, v in g.items() if k != "revision"} for g in groups])
    tb = Table(title="host groups")
    for col in ("group", "hosts"):
        tb.add_column(col)
    for g in groups:
        tb.add_row(g["name"], ", ".join(g["hosts"]))
    console.print(tb)


@app.command("group-delete")
@friendly
def group_delete(name: str, api: Optional[str] = API_OPT) -> None:
    """Delete a host group that no rule names."""
    console.print(connect(api).delete(f"/hostgroups/{name}")["message"])
