"""`vigil cluster settings`: the five cluster policies at a glance (admission control,
restart retries, VM monitoring, restart orchestration, DRS), from the API's
/cluster/settings; each is set with its own `vigil cluster set ...` command."""
from __future__ import annotations

from typing import Optional

from rich.table import Table

from vigil.cli.client import API_OPT, connect
from vigil.cli.cluster import app
from vigil.cli.common import JSON_OPT, console, friendly, print_json


@app.command("settings")
@friendly
def show(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """Every cluster policy: a summary of what is in force and its revision (0: never set)."""
    got = connect(api).get("/cluster/settings")
    if as_json:
        return print_json(got)
    t = Table("Setting", "In force", "Revision")
    for s in got:
        t.add_row(s["name"], s["summary"], str(s["revision"]))
    console.print(t)
