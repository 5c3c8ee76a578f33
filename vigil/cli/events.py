"""`vigil events`: the cluster's event log, once or followed (the API's live stream)."""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Optional

import typer

from vigil.cli.client import API_OPT, connect
from vigil.cli.common import JSON_OPT, console, friendly


def show(e: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(e, default=str) + "\n")
    else:
        ts = time.strftime("%H:%M:%S", time.localtime(e["time"])) + f".{int(e['time'] * 1000) % 1000:03d}"
        who = f" [dim]({e['user']})[/]" if e.get("user") else ""
        console.print(f"[dim]{ts}[/] [bold]{e['kind']:<18}[/] {e['message']}{who}", highlight=False)
    sys.stdout.flush()


@friendly
def events(
    follow: bool = typer.Option(False, "--follow", "-f"),
    last: int = typer.Option(50, "--last", "-n", min=1, max=2000),
    host: Optional[str] = typer.Option(None, "--host", help="only events of this host"),
    vm: Optional[str] = typer.Option(None, "--vm", help="only events of this VM"),
    kind: Optional[str] = typer.Option(None, "--kind", help="only events of this kind (or kind prefix: vm-, task-)"),
    api: Optional[str] = API_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """The cluster's event log: every decision and every observed change."""
    client = connect(api)
    seen = 0.0
    for e in client.get("/events", host=host, vm=vm, kind=kind, limit=last):
        show(e, as_json)
        seen = max(seen, e["time"])
    if not follow:
        return
    for name, e in client.stream("/stream", host=host, vm=vm, kind=kind, changes=False):
        if name == "event" and e["time"] > seen:
            show(e, as_json)
