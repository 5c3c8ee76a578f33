"""The simulator's own promises: virtual time, the two-copies watch, the CLI's diff."""
from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import typer
from typer.testing import CliRunner

from vigil.model import DiskSpec, VMSpec
from vigil.sim import clock as vclock
from vigil.sim.cli import main, register
from vigil.sim.store import MemoryStore
from vigil.sim.world import SimHost, StartFailed, World

ROOT = Path(__file__).resolve().parents[1] / "scenarios"


def test_virtual_time_never_waits() -> None:
    c = vclock.VirtualClock()

    async def go() -> float:
        await asyncio.sleep(3600)
        await asyncio.wait_for(asyncio.sleep(10), 100)
        return c.monotonic()

    t0 = time.perf_counter()
    assert vclock.run(c, go()) == 3610
    assert time.perf_counter() - t0 < 1.0
    assert c.time() < c.time()  # wall time never repeats (event keys)


def world() -> World:
    c = vclock.VirtualClock()
    lines: list[str] = []
    w = World(c, MemoryStore(c.monotonic), lambda t, k, s, m: lines.append(k))
    for i in (1, 2):
        w.add_host(SimHost(f"host{i}", f"10.0.0.{i}", 1024, 2, ("ds1",)))
    return w


def test_two_running_copies_are_seen_and_disk_locks_refuse_them() -> None:
    w = world()
    diskless = VMSpec(name="a")
    w.start_qemu("host1", diskless)
    w.start_qemu("host2", diskless)
    assert len(w.violations) == 1  # no disk, no lock: the second copy runs, and is caught
    disk = VMSpec(name="b", disks=(DiskSpec(name="d", datastore="ds1", path="b.qcow2"),))
    w.start_qemu("host1", disk)
    try:
        w.start_qemu("host2", disk)
        raise AssertionError("the lock should refuse it")
    except StartFailed:
        pass
    assert len(w.lock_refusals) == 1 and len(w.violations) == 1
    try:
        w.start_qemu("host1", disk)  # a second QEMU on the same host: the same lock
        raise AssertionError("the lock should refuse it")
    except StartFailed:
        pass
    w.start_qemu("host2", disk, incoming=True)  # a migration's destination holds no lock
    w.switch_over("host1", "host2", "b")
    assert len(w.violations) == 1 and len(w.lock_refusals) == 2


def test_cli_diff_update_and_typer_registration(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    sc = tmp_path / "s"
    shutil.copytree(ROOT / "steady-state", sc)
    good = (sc / "expected.log").read_text()
    (sc / "expected.log").write_text(good.replace("web created", "web made"))
    assert main(["run", str(sc)]) == 1
    out = capsys.readouterr().out
    assert "-   2.00 vm-created      web    web made" in out and "+   2.00 vm-created      web    web created" in out
    assert main(["run", str(sc), "--update"]) == 0
    assert (sc / "expected.log").read_text() == good
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command, so that "sim" stays a sub-command
        pass

    r = CliRunner().invoke(app, ["sim", "run", str(sc)])
    assert r.exit_code == 0, r.output
