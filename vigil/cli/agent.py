"""`vigil agent`: the one daemon on each host."""
from __future__ import annotations

import typer

from vigil.cli.common import fail
from vigil.config import DEFAULT_PATH
from vigil.model import SpecError


def agent(config: str = typer.Option(..., "--config",
                                     help=f"the host's vigil.toml, usually {DEFAULT_PATH} (docs/config.md)")) -> None:
    """Run the host agent (one per host)."""
    from vigil.agent.agent import main as agent_main
    from vigil.config import AgentConfig

    try:
        AgentConfig.load(config)  # a bad file is refused here, before anything starts
        agent_main(config)
    except SpecError as e:
        fail(str(e))
