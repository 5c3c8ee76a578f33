"""bench/ft.py's code path, shortened: the agents' FT primary and secondary (vigil.lab.ftpair
around a real etcd on loopback) checkpoint one small guest, then one failover keeps the
output rule; the report prints. QEMUs on loopback, no lab (needs root, QEMU and etcd)."""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import sys
from pathlib import Path

import pytest

from vigil.hypervisor.guest_image import GuestImage
from vigil.lab.localetcd import local_etcd
from vigil.lab.standalone import unavailable

pytestmark = [
    pytest.mark.skipif(unavailable() is not None, reason=unavailable() or ""),
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed"),
    pytest.mark.timeout(240),
]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ft.py"


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_ft", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_ft"] = mod
    spec.loader.exec_module(mod)
    return mod


async def test_ft_bench_smoke(image: GuestImage, accel: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ft = _bench()
    args = argparse.Namespace(checkpoints=2, window=4.0, quick=True)
    with local_etcd(tmp_path / "etcd") as etcd:
        series = await ft.guest_series(image, accel, etcd, 128, 0, args)
        fo = await ft.failover_run(image, accel, etcd, 128, 0, random.Random(1))
    assert series["checkpoints"] >= 3 and len(series["interval_ms"]) >= 2
    assert all(b > 0 for b in series["bytes"]) and series["rate_on"] and series["rate_off"]
    assert fo["seq_ok"] and fo["boot_ok"] and fo["acked_ok"], fo
    out = {"accel": accel, "date": "-", "machine_start": ft.machine(), "machine_end": ft.machine(),
           "gap_s": ft.CHECKPOINT_GAP_S, "quick": True, "guests": [series], "failover_memory_mb": 128,
           "failover": [fo], "wall_s": 0.0}
    json.dumps(out, default=str)  # --json
    ft.report(out)
    text = capsys.readouterr().out
    assert "128 MiB idle" in text and "checks: every run" in text
