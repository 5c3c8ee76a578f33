"""`vigil config check FILE`: is this vigil.toml one the agent will start with?"""
from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Host configuration files (vigil.toml; docs/config.md).")


@app.command()
def check(file: str = typer.Argument(..., help="the vigil.toml to check")) -> None:
    """Print every problem with FILE (exit 1), or "ok" (exit 0)."""
    from vigil.config import config_problems

    problems = config_problems(file)
    for p in problems:
        typer.echo(p, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("ok")
