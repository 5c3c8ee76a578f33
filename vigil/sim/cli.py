"""``vigil sim run``: run golden scenarios and compare their logs with ``expected.log``.

``register(app)`` adds the command to vigil's typer app (wired in at the CLI's merge);
``python -m vigil.sim run ...`` gives the same without it.
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator, Optional

import typer

from vigil.sim.scenario import InvariantError, run

EXPECTED = "expected.log"


def check(path: Path, seed: int | None = None, update: bool = False) -> tuple[bool, str]:
    """(ok, what to print) for one scenario folder."""
    try:
        got = run(path, seed)
    except InvariantError as e:
        return False, f"{path}: INVARIANT BROKEN (not recorded): {'; '.join(e.problems)}\n{e.log}"
    exp = path / EXPECTED
    want = exp.read_text() if exp.exists() else ""
    if got == want:
        return True, f"{path}: ok"
    if update:
        exp.write_text(got)
        return True, f"{path}: {EXPECTED} {'updated' if want else 'written'}"
    diff = difflib.unified_diff(want.splitlines(keepends=True), got.splitlines(keepends=True),
                                fromfile=str(exp), tofile=f"{path.name} (this run)")
    return False, f"{path}: the log differs from {EXPECTED}\n" + "".join(diff)


def _check(args: tuple[Path, int | None, bool]) -> tuple[bool, str]:
    return check(*args)


def run_all(paths: list[Path], seed: int | None = None, update: bool = False, jobs: int = 1) -> int:
    """Check each scenario (a folder, or a folder of scenario folders); the exit code.
    ``jobs`` processes run them side by side (each scenario is deterministic on its own:
    the output, in the folders' order, is the same for any count; 0: one per CPU)."""
    folders: list[Path] = []
    for p in paths:
        folders += [p] if (p / "scenario.toml").exists() else sorted(x.parent for x in p.glob("*/scenario.toml"))
    if not folders:
        print("no scenario found", file=sys.stderr)
        return 2
    jobs = min(jobs or os.cpu_count() or 1, len(folders))
    failed = 0
    for ok, text in _results([(f, seed, update) for f in folders], jobs):
        failed += not ok
        print(text.rstrip("\n"), flush=True)
    return 1 if failed else 0


def _results(work: list[tuple[Path, int | None, bool]], jobs: int) -> Iterator[tuple[bool, str]]:
    """Each scenario's check, in ``work``'s order: here, or in ``jobs`` worker processes."""
    if jobs <= 1:
        yield from map(_check, work)
        return
    with ProcessPoolExecutor(jobs) as pool:
        yield from pool.map(_check, work)


def register(app: typer.Typer) -> None:
    sim = typer.Typer(help="The simulator: vigil's controller over a simulated cluster, on virtual time.")

    @sim.command("run")
    def run_cmd(paths: list[Path] = typer.Argument(..., help="scenario folders (or a folder of them)"),
                update: bool = typer.Option(False, "--update", help="rewrite expected.log after a deliberate change"),
                seed: Optional[int] = typer.Option(None, "--seed", help="instead of the scenario's own"),
                jobs: int = typer.Option(0, "--jobs", "-j", min=0, help="processes side by side (0: one per CPU)")) -> None:
        """Run scenarios; print a unified diff against expected.log where the log differs."""
        raise typer.Exit(run_all(paths, seed, update, jobs))

    app.add_typer(sim, name="sim")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vigil.sim")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run scenarios against their expected.log")
    r.add_argument("paths", nargs="+", type=Path)
    r.add_argument("--update", action="store_true", help="rewrite expected.log after a deliberate change")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--jobs", "-j", type=int, default=0, help="processes side by side (0: one per CPU)")
    a = ap.parse_args(argv)
    return run_all(a.paths, a.seed, a.update, max(a.jobs, 0))
