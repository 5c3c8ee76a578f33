"""`vigil lab ...`: a whole cluster on this machine, and real faults injected into it.
The fault commands are generated from vigil/lab/fault_table.py, which `python -m vigil.lab`
uses too."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

import typer
from rich.table import Table

from vigil.cli.common import JSON_OPT, console, friendly, print_json, progress
from vigil.lab.fault_table import FAULTS, OPTIONAL_HOST, SECONDS, SECONDS_DEFAULT, Arg, Fault, describe

app = typer.Typer(no_args_is_help=True, help="A real cluster on this machine (root)")
fault_app = typer.Typer(no_args_is_help=True, help="Inject real faults into the lab")
app.add_typer(fault_app, name="fault")


@app.command("up")
@friendly
def lab_up(
    hosts: int = typer.Option(3, "--hosts", min=1, max=20),
    datastores: int = typer.Option(1, "--datastores", min=1, max=8),
    host_memory: Optional[int] = typer.Option(None, "--host-memory", help="MiB each lab host offers to VMs"),
    fencing: str = typer.Option("", "--fencing", help="give every host BMC emulators and fence them over "
                                "'redfish' or 'ipmi'"),
) -> None:
    """Build a cluster on this machine: namespaces, etcd, datastores, agents."""
    from vigil.lab.lab import Lab, LabConfig

    Lab(progress).up(LabConfig(hosts=hosts, datastores=datastores, memory_mb=host_memory, fencing=fencing))
    console.print(f"lab up: {hosts} hosts, {datastores} datastore(s). Try 'vigil host list'.")


@app.command("down")
@friendly
def lab_down() -> None:
    """Tear the lab down: processes, namespaces, mounts, data."""
    from vigil.lab.lab import Lab

    Lab(progress).down()
    console.print("lab down")


@app.command("clean")
@friendly
def lab_clean() -> None:
    """Remove every trace vigil left on this machine (an earlier lab, caches); refuses while a lab runs."""
    from vigil.lab.lab import Lab

    removed = Lab(progress).clean()
    console.print("removed: " + (", ".join(removed) if removed else "nothing (no vigil state here)"))


@app.command("status")
@friendly
def lab_status(as_json: bool = JSON_OPT) -> None:
    """Lab hosts, their processes and active faults."""
    from vigil.lab.lab import Lab

    st = Lab().status()
    if as_json:
        return print_json(st)
    if not st.get("up"):
        console.print("no lab is up")
        return
    t = Table(title=f"lab ({st['subnet']})")
    for col in ("host", "address", "state", "link", "supervisor", "agent", "etcd", "api", "resets", "faults"):
        t.add_column(col)
    for name, h in sorted(st["hosts"].items()):
        t.add_row(name, h["address"], h["state"] or "-", "up" if h["link_up"] else "[red]down[/]",
                  str(h["supervisor_pid"] or "-"), str(h["agent_pid"] or "-"), str(h["etcd_pid"] or "-"),
                  str(h.get("api_pid") or "-"), str(h["resets"]), ", ".join(describe(f) for f in h["faults"]) or "-")
    console.print(t)
    api = st.get("api") or {}
    if api.get("urls"):
        console.print(f"API and dashboard: {', '.join(u + '/' for u in api['urls'])}")
        console.print(f"first admin: user [bold]{api['user']}[/], password [bold]{api['password']}[/] "
                      f"(CA certificate: {api['ca']})", highlight=False)


def _parameter(arg: Arg) -> inspect.Parameter:
    """The typer parameter for one argument of a fault: a duration is an option."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    if arg.kind == SECONDS:
        return inspect.Parameter(arg.name, kind, default=typer.Option(SECONDS_DEFAULT, "--seconds"), annotation=float)
    if arg.kind == OPTIONAL_HOST:
        return inspect.Parameter(arg.name, kind, default=typer.Argument(None), annotation=Optional[str])
    return inspect.Parameter(arg.name, kind, annotation=str)


def fault_command(fault: Fault) -> Callable[..., None]:
    """A typer command running one fault of the table; typer reads its signature."""

    def command(**typed: Any) -> None:
        from vigil.lab.lab import Lab

        result = fault.fn(Lab(progress), *(a.parse(typed[a.name]) for a in fault.args))
        console.print(fault.done(typed, result))

    params = [_parameter(a) for a in fault.args]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = command.__qualname__ = "fault_" + fault.name.replace("-", "_")
    command.__doc__ = fault.help
    return friendly(command)


for _fault in FAULTS:
    fault_app.command(_fault.name, help=_fault.help)(fault_command(_fault))
