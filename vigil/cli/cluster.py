"""`vigil cluster ...`: the cluster as a whole and the policies an operator sets on it.

Each policy adds its own ``vigil cluster set <policy>`` command to ``set_app`` from its own
module, so this one only holds the groups.
"""
from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="The cluster: its policies and capacity")
set_app = typer.Typer(no_args_is_help=True, help="Set a cluster policy")
app.add_typer(set_app, name="set")
