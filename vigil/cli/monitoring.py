"""`vigil cluster set monitoring`, `vigil cluster monitoring`, `vigil vm set NAME
--monitoring ...`: VM and application monitoring (vigil.policy.vm_monitoring), through
the API's /cluster/monitoring and /vms/{name}/monitoring. `vigil vm show` prints a VM's
resets with vigil.cli.monitoring_rows."""
from __future__ import annotations

from typing import Any, Optional

import typer

from vigil.cli.cluster import app as cluster_app
from vigil.cli.cluster import set_app
from vigil.cli.vm import app as vm_app
from vigil.cli.client import API_OPT, connect
from vigil.cli.common import JSON_OPT, console, friendly, print_json
from vigil.model import MONITORING_PRESETS, SpecError

PRESET_HELP = "|".join(MONITORING_PRESETS)


def _body(preset: Optional[str], interval: Optional[float], max_resets: Optional[int], window: Optional[float],
          min_uptime: Optional[float], application: Optional[bool]) -> dict[str, Any]:
    if preset is not None and preset not in MONITORING_PRESETS:
        raise SpecError(f"--preset must be one of {', '.join(MONITORING_PRESETS)}")
    return {"preset": preset, "interval_s": interval, "max_resets": max_resets, "window_s": window,
            "min_uptime_s": min_uptime, "application": application}


INTERVAL = typer.Option(None, "--interval", help="seconds without guest heartbeat nor I/O before a reset")
MAX_RESETS = typer.Option(None, "--max-resets", help="resets allowed in the window (0: no limit)")
WINDOW = typer.Option(None, "--window", help="seconds the limit counts over (0: no window, every reset counts)")
MIN_UPTIME = typer.Option(None, "--min-uptime", help="seconds after a start or reset before it is watched")
APPLICATION = typer.Option(None, "--application/--no-application",
                           help="also reset when the guest's application heartbeat stops")


@set_app.command("monitoring")
@friendly
def set_monitoring(
    preset: str = typer.Option(..., "--preset", help=f"{PRESET_HELP} (vSphere's: high 30s, 3 resets an hour; "
                               "medium 60s, 3 a day; low 120s, 3 a week)"),
    interval: Optional[float] = INTERVAL, max_resets: Optional[int] = MAX_RESETS, window: Optional[float] = WINDOW,
    min_uptime: Optional[float] = MIN_UPTIME, application: Optional[bool] = APPLICATION,
    api: Optional[str] = API_OPT,
) -> None:
    """VM and application monitoring for the whole cluster (values not given: the preset's)."""
    out = connect(api).put("/cluster/monitoring", _body(preset, interval, max_resets, window, min_uptime, application))
    console.print(f"VM monitoring: {out['summary']}")


@cluster_app.command("monitoring")
@friendly
def show_monitoring(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """The cluster's VM and application monitoring."""
    out = connect(api).get("/cluster/monitoring")
    if as_json:
        return print_json(out)
    console.print(f"VM monitoring: {out['summary']}")


@vm_app.command("set")
@friendly
def vm_set(
    name: str,
    monitoring: Optional[str] = typer.Option(None, "--monitoring",
                                             help=f"{PRESET_HELP}, or 'cluster' for the cluster's settings"),
    interval: Optional[float] = INTERVAL, max_resets: Optional[int] = MAX_RESETS, window: Optional[float] = WINDOW,
    min_uptime: Optional[float] = MIN_UPTIME, application: Optional[bool] = APPLICATION,
    api: Optional[str] = API_OPT,
) -> None:
    """Change a VM's settings without a restart (today: its own VM monitoring)."""
    c = connect(api)
    given = (interval, max_resets, window, min_uptime, application)
    if monitoring == "cluster":
        out = c.delete(f"/vms/{name}/monitoring")
    elif monitoring is None and all(v is None for v in given):
        raise SpecError("nothing to set: give --monitoring PRESET (or 'cluster') and/or its values")
    else:
        out = c.put(f"/vms/{name}/monitoring", _body(monitoring, *given))
    console.print(f"{name}: VM monitoring {out['settings']['summary']}")
