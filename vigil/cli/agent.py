"""`vigil agent`: the one daemon on each host."""
from __future__ import annotations

import typer

from vigil.cli.common import fail
from vigil.model import SpecError


def agent(config: str = typer.Option(..., "--config", help="agent config JSON")) -> None:
    """Run the host agent (one per host)."""
    from vigil.agent.agent import main as agent_main

    try:
        agent_main(config)
    except SpecError as e:
        fail(str(e))
