"""The systemd units in packaging/systemd pass ``systemd-analyze verify``, and the agent's
carries the settings its safety rests on."""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
NAMES = ("vigil-agent.service", "vigil-api.service")
ANALYZE = shutil.which("systemd-analyze") or ("/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").exists()
                                              else None)


def unit(name: str) -> configparser.ConfigParser:
    p = configparser.ConfigParser(strict=False, interpolation=None)
    p.optionxform = str  # type: ignore[assignment,method-assign]
    p.read(UNITS / name)
    return p


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_the_units_verify(tmp_path):
    """Verified as copies whose ExecStart names this environment's vigil (verify checks
    that the binary exists; /usr/bin/vigil is where a package puts it)."""
    vigil = Path(sys.executable).with_name("vigil")
    if not vigil.exists():
        pytest.skip(f"no vigil script beside {sys.executable}")
    copies = []
    for name in NAMES:
        text = (UNITS / name).read_text()
        assert "ExecStart=/usr/bin/vigil " in text
        (tmp_path / name).write_text(text.replace("/usr/bin/vigil", str(vigil)))
        copies.append(str(tmp_path / name))
    r = subprocess.run([ANALYZE, "verify", *copies], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stdout + r.stderr


def test_the_agent_unit_never_kills_the_vms_and_is_watched():
    s = unit("vigil-agent.service")["Service"]
    assert s["Type"] == "notify" and s["KillMode"] == "process"
    assert s["Restart"] in ("always", "on-failure") and s["WatchdogSec"]
    assert s["ExecStart"] == "/usr/bin/vigil agent --config /etc/vigil/vigil.toml"
    u = unit("vigil-agent.service")["Unit"]
    assert "network-online.target" in u["Wants"] and "network-online.target" in u["After"]


def test_the_api_unit_runs_the_api():
    s = unit("vigil-api.service")["Service"]
    assert s["ExecStart"].startswith("/usr/bin/vigil api ")
