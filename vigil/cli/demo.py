"""`vigil demo`: a lab, six VMs, one host's power cut, the failover shown."""
from __future__ import annotations

import typer

from vigil.cli.common import console, friendly


@friendly
def demo(keep: bool = typer.Option(False, "--keep", help="leave the lab up at the end")) -> None:
    """Build a 3-host lab, run 6 VMs, cut one host's power, show the failover."""
    from vigil.lab.demo import run_demo

    run_demo(console, keep=keep)
