"""What a lab is built from: LabConfig and the agent command lines it can run."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .layout import MAX_ETCD_MEMBERS, LabError


@dataclass
class LabConfig:
    hosts: int = 3
    datastores: int = 2
    subnet: str = "10.77.0.0/24"
    etcd_members: int | None = None        # default: one per host, at most 5
    watchdog_timeout_s: float = 5.0
    reboot_delay_s: float = 20.0
    restart_delay_s: float = 1.0
    # The agent's command line; "{config}", "{host}", "{python}", "{watchdog}" are
    # replaced ({config}: the host's vigil.toml). Default: <venv>/bin/vigil agent --config {config}
    agent_command: list[str] | None = None
    memory_mb: int | None = None           # per host; default: half the RAM shared out
    cpus: int | None = None                # per host; default: the machine's CPUs
    etcd_timeout_s: float = 30.0
    # Fencing: every host gets a Redfish and an IPMI BMC emulator (vigil.lab.bmc); this
    # says which one its vigil.toml names ("redfish" | "ipmi"); empty: no BMCs, no fencing.
    fencing: str = ""

    def validate(self) -> None:
        if self.fencing not in ("", "redfish", "ipmi"):
            raise LabError('fencing must be "redfish", "ipmi" or empty')
        if not 1 <= self.hosts <= 200:
            raise LabError("hosts must be between 1 and 200")
        if not 0 <= self.datastores <= 100:
            raise LabError("datastores must be between 0 and 100")
        m = self.members
        if not 0 <= m <= min(self.hosts, MAX_ETCD_MEMBERS) or m == 0:
            raise LabError(f"etcd_members must be between 1 and {min(self.hosts, MAX_ETCD_MEMBERS)}")

    @property
    def members(self) -> int:
        return self.etcd_members if self.etcd_members is not None else min(self.hosts, MAX_ETCD_MEMBERS)


def default_agent_command() -> list[str]:
    return [str(Path(sys.executable).parent / "vigil"), "agent", "--config", "{config}"]


def dummy_agent_command() -> list[str]:
    """A stand-in agent that only pets the watchdog (tests, demos)."""
    return ["{python}", "-m", "vigil.lab.dummy_agent", "--config", "{config}"]


def _machine_memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 4096
