"""The lab's BMCs: each lab host gets a Redfish endpoint (vigil.lab.bmc_redfish) and an
IPMI endpoint (``ipmi_sim`` from Debian's openipmi, its chassis control program asking
this process), both on the lab bridge's address in the root namespace, so that they live
outside the hosts they manage: a host powered off, hung or cut off keeps a BMC that
answers, as on real hardware, unless the fault ``bmc-fail`` kills it (Redfish then holds
connections without an answer, ipmi_sim is stopped with SIGSTOP).

Their power actions are the lab's real ones (vigil.lab.faults.power_off / power_on);
"Off" means the host has an active power_off fault. One process, ``python -m
vigil.lab.bmc_process``, started by `vigil lab up` (detached, root namespace) and stopped by
`vigil lab down`; its files are in /run/vigil-lab/bmc/.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from .layout import RUN_DIR, LabError, pid_alive

BMC_DIR = RUN_DIR / "bmc"
PASSWORD_FILE = BMC_DIR / "password"
CONTROL = BMC_DIR / "control.sock"
PID_FILE = BMC_DIR / "pid"
LOG = BMC_DIR / "bmc.log"
USER = "vigil"
REDFISH_PORT = 8600  # + the host's index
IPMI_PORT = 6230  # + the host's index (UDP)


def redfish_port(index: int) -> int:
    return REDFISH_PORT + index


def ipmi_port(index: int) -> int:
    return IPMI_PORT + index


def device(kind: str, address: str, index: int, ca: str) -> dict:
    """The [fencing] keys of lab host number ``index`` for BMC kind ``kind``."""
    return {"fencing_kind": kind, "fencing_address": address, "fencing_user": USER,
            "fencing_password_file": str(PASSWORD_FILE),
            "fencing_port": redfish_port(index) if kind == "redfish" else ipmi_port(index),
            **({"fencing_ca": ca} if kind == "redfish" else {})}


def prepare(ca_dir: Path, address: str) -> None:
    """The BMCs' password and Redfish certificate (before any host gets its config)."""
    from vigil.pki import issue

    BMC_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(BMC_DIR, 0o700)
    fd = os.open(PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(12) + "\n")
    issue(ca_dir, BMC_DIR, "server", "bmc", ips=(address,))


def start() -> int:
    """Start the BMC process (root namespace, detached); returns its pid once it serves."""
    import vigil

    env = dict(os.environ)
    root = str(Path(vigil.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with contextlib.suppress(FileNotFoundError):
        PID_FILE.unlink()
    with open(LOG, "ab") as out:
        subprocess.run(["setsid", "-f", sys.executable, "-m", "vigil.lab.bmc_process"], stdin=subprocess.DEVNULL,
                       stdout=out, stderr=out, cwd="/", env=env, check=True, timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            pid = int(PID_FILE.read_text())
            if pid_alive(pid):
                return pid
        time.sleep(0.05)
    raise LabError(f"the lab's BMCs did not start; {LOG}:\n{_tail(LOG)}")


def stop() -> None:
    """Stop the BMC process and its ipmi_sim children (by the pids they wrote)."""
    pids = []
    for f in [PID_FILE, *BMC_DIR.glob("ipmi-*/pid")] if BMC_DIR.exists() else []:
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(f.read_text()))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def _tail(p: Path, n: int = 15) -> str:
    try:
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
