"""`vigil events`: the cluster's event log, once or followed."""
from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Optional

import typer

from vigil.cli.common import ETCD_OPT, JSON_OPT, console, friendly, run_store
from vigil.store.etcd import Store


@friendly
def events(
    follow: bool = typer.Option(False, "--follow", "-f"),
    last: int = typer.Option(50, "--last", "-n"),
    etcd: Optional[str] = ETCD_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """The cluster's event log: every decision and every observed change."""
    from vigil.store import keys as K
    from vigil.store.events import parse_events

    async def go(store: Store) -> None:
        seen: set[float] = set()
        first = True
        while True:
            evs = parse_events(await store.get_prefix(K.EVENTS))
            new = [e for e in evs if (e.time, e.kind, e.vm, e.host) not in seen]
            if first:
                new = new[-last:]
            for e in evs:
                seen.add((e.time, e.kind, e.vm, e.host))  # type: ignore[arg-type]
            for e in new:
                if as_json:
                    sys.stdout.write(json.dumps(e.__dict__, default=str) + "\n")
                else:
                    ts = time.strftime("%H:%M:%S", time.localtime(e.time)) + f".{int(e.time * 1000) % 1000:03d}"
                    console.print(f"[dim]{ts}[/] [bold]{e.kind:<18}[/] {e.message}", highlight=False)
            sys.stdout.flush()
            first = False
            if not follow:
                return
            await asyncio.sleep(0.5)

    run_store(etcd, go)
