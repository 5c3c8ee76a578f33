"""Agent configuration: one JSON file per host (the lab writes them), timing defaults."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vigil.model import SpecError

DEFAULT_CACHE_DIR = "/var/cache/vigil"


def cache_dir() -> Path:
    """Where vigil keeps what it can remake (the guest image, the accelerator probe's
    answer): ``$VIGIL_CACHE_DIR`` or /var/cache/vigil. Removing it is always safe."""
    import os

    return Path(os.environ.get("VIGIL_CACHE_DIR") or DEFAULT_CACHE_DIR)


@dataclass(frozen=True)
class AgentConfig:
    host: str
    address: str
    etcd_endpoints: tuple[str, ...]
    run_dir: str
    datastores: dict[str, str]  # name -> mount path on this host
    watchdog_file: str = ""  # the lab's stand-in for /dev/watchdog; empty: no watchdog
    watchdog_device: str = ""  # the host's /dev/watchdog (or /dev/watchdogN); empty: watchdog_file
    isolation_addresses: tuple[str, ...] = ()
    peers: dict[str, str] = field(default_factory=dict)  # host -> address
    memory_mb: int = 2048
    cpus: int = 2
    lease_ttl: int = 3
    tick_s: float = 0.5
    hb_grace_s: float = 2.5
    watchdog_s: float = 5.0
    guest_hb_timeout_s: float = 5.0
    qemu_binary: str = "qemu-system-x86_64"
    tls_dir: str = ""  # migration TLS credentials (tls-creds-x509 layout); empty: plain TCP
    networks: dict[str, str] = field(default_factory=dict)  # VM network name -> bridge on this host
    cache_dir: str = ""  # the accelerator probe's answer (and its guest); empty: cache_dir()
    metrics_listen: str = ""  # ADDRESS:PORT of this host's own /metrics (plain HTTP); empty: none

    @classmethod
    def load(cls, path: str | Path) -> "AgentConfig":
        try:
            data: dict[str, Any] = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise SpecError(f"cannot read agent config {path}: {e}") from None
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in data.items() if k in known}
        for k in ("etcd_endpoints", "isolation_addresses"):
            if k in d:
                d[k] = tuple(d[k])
        try:
            return cls(**d)
        except TypeError as e:
            raise SpecError(f"agent config {path}: {e}") from None


def cluster_endpoints(explicit: str | None = None) -> list[str]:
    """etcd endpoints for the CLI: --etcd / $VIGIL_ETCD, else the lab's cluster file."""
    import os

    raw = explicit or os.environ.get("VIGIL_ETCD")
    if raw:
        return [e.strip() for e in raw.split(",") if e.strip()]
    lab = Path("/run/vigil-lab/cluster.json")
    if lab.exists():
        try:
            return list(json.loads(lab.read_text())["etcd_endpoints"])
        except (OSError, ValueError, KeyError):
            pass
    return ["127.0.0.1:2379"]
