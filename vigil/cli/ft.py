"""`vigil vm ft ...`: Fault Tolerance, a checkpointed standby on another host."""
from __future__ import annotations

from typing import Any, Optional

import typer

from vigil.cli.client import API_OPT, connect
from vigil.cli.common import console, friendly

app = typer.Typer(no_args_is_help=True, help="Fault Tolerance: a standby copy that takes over without a restart")


def ft_summary(ft: dict[str, Any]) -> str:
    """One line: FT state, secondary and checkpoint figures (for `vigil vm show`)."""
    state = ft.get("state", "disabled")
    if state == "disabled":
        return "disabled"
    parts = [{"protected": "[green]protected[/]", "unprotected": "[red]unprotected[/]"}.get(state, f"[yellow]{state}[/]")]
    if ft.get("secondary"):
        parts.append(f"secondary {ft['secondary']}")
    if ft.get("checkpoints"):
        parts.append(f"{ft['checkpoints']} checkpoints, every {ft.get('interval_ms', 0):.0f} ms, "
                     f"pause {ft.get('pause_ms', 0):.0f} ms, {ft.get('bytes', 0) / 2**20:.0f} MiB each, "
                     f"output held {ft.get('lag_ms', 0):.0f} ms")
    if ft.get("last_error") and state != "protected":
        parts.append(f"last error: {ft['last_error']}")
    return "; ".join(parts)


@app.command("enable")
@friendly
def ft_enable(name: str, api: Optional[str] = API_OPT) -> None:
    """Protect a VM with a secondary on another host, kept in step by checkpoints.

    Each checkpoint copies the VM's whole RAM (no incremental checkpoints without COLO),
    so the interval grows with its memory; the guest's output (console and packets) is
    held until the checkpoint that produced it is safe, up to one interval plus one
    checkpoint; its disk writes are kept in step with the checkpoints."""
    from vigil.hypervisor.ft import MAX_FT_MEMORY_MB

    console.print(connect(api).put(f"/vms/{name}/ft")["message"])
    console.print(f"[dim]limits: up to {MAX_FT_MEMORY_MB} MiB of RAM; each checkpoint copies the whole RAM, so "
                  "the interval grows with it (measured: ~0.25 s for 128-512 MiB on loopback, ~1 s for 128 MiB "
                  "over TLS between lab hosts; `vigil vm show` gives this VM's); not supported: live migration "
                  "(maintenance hands the VM to its secondary), Storage vMotion, disks on two datastores[/]")


@app.command("disable")
@friendly
def ft_disable(name: str, api: Optional[str] = API_OPT) -> None:
    """Turn Fault Tolerance off (the secondary's standbys are quit)."""
    console.print(connect(api).delete(f"/vms/{name}/ft")["message"])
