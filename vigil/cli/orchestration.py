"""`vigil cluster orchestration` and `vigil cluster set orchestration`: when a restarted VM
counts as ready for those that wait on it (lower tiers, depends-on rules)."""
from __future__ import annotations

from typing import Optional

import typer

from vigil.cli.client import API_OPT, connect
from vigil.cli.cluster import app, set_app
from vigil.cli.common import JSON_OPT, console, friendly, print_json

READY_HELP = "allocated | powered-on | guest | app (application heartbeat)"


@app.command("orchestration")
@friendly
def show(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """The restart orchestration settings in force."""
    got = connect(api).get("/cluster/orchestration")
    if as_json:
        return print_json(got["effective"])
    e = got["effective"]
    console.print(f"ready when: {e['ready']}, extra delay {e['delay_s']:g}s, timeout {e['timeout_s']:g}s")
    for prio, t in sorted((e.get("tiers") or {}).items()):
        console.print(f"  tier {prio}: {t['ready']}, extra delay {t['delay_s']:g}s, timeout {t['timeout_s']:g}s")


@set_app.command("orchestration")
@friendly
def set_orchestration(ready: Optional[str] = typer.Option(None, "--ready", help=READY_HELP),
                      delay: Optional[float] = typer.Option(None, "--delay", help="extra seconds once ready"),
                      timeout: Optional[float] = typer.Option(None, "--timeout",
                                                              help="seconds after which the next ones start anyway"),
                      tier: Optional[str] = typer.Option(None, "--tier", help="set this restart priority's only"),
                      clear_tier: bool = typer.Option(False, "--clear-tier", help="drop --tier's own setting"),
                      api: Optional[str] = API_OPT) -> None:
    """Change the ready condition, delay or timeout, of the cluster or of one tier."""
    c = connect(api)
    got = c.get("/cluster/orchestration")
    stored = dict(got["stored"])
    change = {k: v for k, v in (("ready", ready), ("delay_s", delay), ("timeout_s", timeout)) if v is not None}
    if tier:
        tiers = dict(stored.get("tiers") or {})
        if clear_tier:
            tiers.pop(tier, None)
        else:
            tiers[tier] = {**tiers.get(tier, {}), **change}
        stored["tiers"] = tiers
    else:
        stored.update(change)
    res = c.request("PUT", "/cluster/orchestration", json=stored,
                    headers={"If-Match": str(got["revision"])} if got["revision"] else {}).json()
    e = res["effective"]
    console.print(f"orchestration: ready when {e['ready']}, extra delay {e['delay_s']:g}s, timeout {e['timeout_s']:g}s"
                  + "".join(f"; tier {p}: {t['ready']}" for p, t in sorted((e.get("tiers") or {}).items())))
