"""`vigil drs recommendations|apply` and `vigil cluster set drs`: load balancing by live
migration (vigil.policy.drs decides, the controller runs a round every interval)."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from vigil.cli.client import API_OPT, connect
from vigil.cli.cluster import set_app
from vigil.cli.common import JSON_OPT, console, fail, friendly, print_json

app = typer.Typer(no_args_is_help=True, help="DRS: VMs moved live to even out the hosts' load")


@set_app.command("drs")
@friendly
def set_drs(mode: Optional[str] = typer.Option(None, "--mode", help="off | manual | automatic"),
            threshold: Optional[int] = typer.Option(None, "--threshold",
                                                    help="1 (mandatory moves only) .. 5 (most eager); 3 by default"),
            interval: Optional[float] = typer.Option(None, "--interval", help="seconds between two rounds"),
            cooldown: Optional[float] = typer.Option(None, "--cooldown",
                                                     help="seconds a VM just moved stays where it is"),
            max_moves: Optional[int] = typer.Option(None, "--max-moves", help="DRS migrations in flight at once"),
            space: Optional[float] = typer.Option(None, "--space-threshold",
                                                  help="Storage DRS: share of a datastore used past which disks "
                                                       "move off it (0.80 by default)"),
            latency: Optional[float] = typer.Option(None, "--latency-threshold",
                                                    help="Storage DRS: disk operations' mean time (ms) past which "
                                                         "disks move off a datastore (15 by default)"),
            api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """Turn DRS on (manual: recommend; automatic: move) or off, and how eager it is."""
    s = connect(api).put("/drs/settings", {"mode": mode, "threshold": threshold, "interval_s": interval,
                                            "cooldown_s": cooldown, "max_moves": max_moves,
                                            "space_threshold": space, "latency_threshold_ms": latency})
    if as_json:
        return print_json(s)
    console.print(f"DRS {s['mode']}, threshold {s['threshold']}: a round every {s['interval_s']:g} s, "
                  f"moves after {s['hold_rounds']} rounds over, at most {s['max_moves']} at once, "
                  f"cool-down {s['cooldown_s']:g} s")


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f}"


@app.command("recommendations")
@friendly
def recommendations(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """The controller's last DRS round: the imbalance, and each move with its effect."""
    r = connect(api).get("/drs/recommendations")
    if as_json:
        return print_json(r)
    console.print(f"DRS {r.get('mode', 'off')}: imbalance {_fmt(r.get('imbalance'))} "
                  f"(tolerated {_fmt(r.get('tolerated'))}), after the moves {_fmt(r.get('imbalance_after'))}")
    console.print(r.get("reason", ""), highlight=False)
    if r.get("disk_reason"):
        console.print(f"Storage DRS: {r['disk_reason']}", highlight=False)
    if r.get("disk_moves"):
        d = Table(title="recommended disk moves")
        for col in ("id", "VM", "disk", "from", "to", "size", "why"):
            d.add_column(col)
        for m in r["disk_moves"]:
            d.add_row(m["id"], m["vm"], m["disk"], m["src"], m["dst"], f"{m['size_mb']} MiB", m["reason"])
        console.print(d)
    if not r.get("moves"):
        return
    t = Table(title="recommended moves")
    for col in ("id", "VM", "from", "to", "kind", "memory", "imbalance after", "why"):
        t.add_column(col)
    for m in r["moves"]:
        t.add_row(m["id"], m["vm"], m["src"], m["dst"], "mandatory" if m["mandatory"] else "balance",
                  f"{m['memory_mb']} MiB", f"{m['imbalance_after']:.3f}", m["reason"])
    console.print(t)


@app.command("apply")
@friendly
def apply(ids: Optional[list[str]] = typer.Argument(None, help="recommendation ids (vigil drs recommendations)"),
          all_: bool = typer.Option(False, "--all", help="every current recommendation"),
          api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """Carry out recommendations: each starts a live migration (see 'vigil task list')."""
    if not ids and not all_:
        fail("name recommendation ids, or --all")
    out = connect(api).post("/drs/apply", {"ids": ids or [], "all": all_})
    if as_json:
        return print_json(out)
    bad = 0
    for r in out:
        if r["error"]:
            bad += 1
            console.print(f"[red]{r['vm']} -> {r['dst']}: {r['error']}[/]")
        else:
            console.print(f"{r['vm']} -> {r['dst']}: task {r['task']} started")
    if bad:
        raise typer.Exit(1)
