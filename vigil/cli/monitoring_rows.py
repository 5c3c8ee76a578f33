"""A VM's monitoring as `vigil vm show` prints it (apart from vigil.cli.monitoring,
which adds its commands to `vigil vm`, so that neither imports the other)."""
from __future__ import annotations

import time
from typing import Any

from vigil.model import SpecError


def monitoring_rows(c: Any, name: str) -> list[tuple[str, str]]:
    """`vigil vm show`'s lines on monitoring: the settings in force, the resets made."""
    try:
        m = c.get(f"/vms/{name}/monitoring")
    except SpecError:
        return []
    own = " (its own)" if m["own"] else ""
    rows = [("monitoring", m["settings"]["summary"] + own)]
    if m["resets"]:
        last = m["last_reset"] or {}
        ago = f"{time.time() - last['time']:.0f}s ago on {last.get('host', '?')}" if last.get("time") else ""
        rows.append(("monitoring resets", f"{len(m['resets'])} in all, {m['resets_in_window']} in the window; "
                                          f"last {ago}: {last.get('reason', '')}"))
    return rows
