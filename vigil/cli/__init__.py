"""The ``vigil`` command line: readable tables, ``--json`` for machines, no tracebacks.

One module per subject; this one only assembles them, so the whole command tree reads here:

    vigil agent                      cli/agent.py
    vigil config check FILE          cli/config.py (the format: vigil/config/, docs/config.md)
    vigil api                        cli/api.py (the server: vigil/api/)
    vigil login / logout / user / token  cli/access.py
    vigil events                     cli/events.py
    vigil demo                       cli/demo.py
    vigil vm ...                     cli/vm.py (vigil vm ft ...: cli/ft.py)
    vigil host ... / maintenance     cli/host.py
    vigil lab ... / lab fault ...    cli/lab.py (faults from vigil/lab/fault_table.py)
    vigil datastore ...              cli/datastore.py
    vigil datastore-cluster ...      cli/datastore_cluster.py (Storage DRS's groups)
    vigil task ...                   cli/task.py
    vigil rule ...                   cli/rule.py
    vigil cluster ... / cluster set  cli/cluster.py (the groups; each policy adds its command)
    vigil drs ... / cluster set drs  cli/drs.py
    vigil cluster set admission|retries, capacity, what-if   cli/admission.py
    vigil cluster set monitoring / vm set --monitoring   cli/monitoring.py
    vigil cluster init / add-host / remove-host / admin   cli/cluster_init.py (vigil/bootstrap/)
    vigil sim run SCENARIO...        vigil/sim/cli.py (the simulator's golden scenarios)

Shared options, error handling and output helpers are in cli/common.py.

This package's own module only starts the right one: the two daemons (``vigil agent``,
``vigil api``) load their own command alone, not the whole tree (half their start-up CPU:
a lab of 3 hosts starts 6 of them, a real host restarts them on every upgrade), and
everything else loads cli/tree.py.
"""
from __future__ import annotations

import sys
from importlib import import_module
from typing import Any

# `vigil NAME ...` that needs only the module of NAME: (module, function)
_DAEMONS = {"agent": ("vigil.cli.agent", "agent"), "api": ("vigil.cli.api", "api")}
_FROM_APP = ("app", "fail", "friendly", "parse_disk")


def __getattr__(name: str) -> Any:
    if name in _FROM_APP:
        return getattr(import_module("vigil.cli.tree"), name)
    raise AttributeError(f"module 'vigil.cli' has no attribute {name!r}")


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] in _DAEMONS:
        import typer

        module, function = _DAEMONS[argv[0]]
        one = typer.Typer(add_completion=False)
        one.command()(getattr(import_module(module), function))
        one(args=argv[1:], prog_name=f"vigil {argv[0]}")
        return
    import_module("vigil.cli.tree").app()
