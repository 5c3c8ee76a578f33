"""Agent configuration: one ``/etc/vigil/vigil.toml`` per host (the lab writes them too).

``AgentConfig`` is the in-memory form every part of the agent reads; the file format, its
sections and its checks live in ``vigil/config/toml_file.py`` (docs/config.md lists every key).
Files ending in ``.json`` are still read the old way for one release.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vigil.config.toml_file import ConfigError, parse_toml, render_toml
from vigil.model import SpecError
from vigil.policy.view import Timing

DEFAULT_CACHE_DIR = "/var/cache/vigil"
DEFAULT_PATH = "/etc/vigil/vigil.toml"

__all__ = ["AgentConfig", "ConfigError", "DEFAULT_CACHE_DIR", "DEFAULT_PATH", "cache_dir",
           "cluster_endpoints", "config_problems"]


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
    # etcd client TLS (vigil.config.etcd_client.etcd_tls); empty etcd_ca: plain text
    # The fencing_* keys say how to fence this host (its agent publishes them in hosts/, the
    # leader's controller uses them).
    etcd_ca: str = ""
    etcd_cert: str = ""
    etcd_key: str = ""
    etcd_server_name: str = ""  # the name the members' certificates carry; empty: "vigil-etcd"
    # Read and checked, not used yet: the real watchdog device, and how to fence this host.
    # The API server's address and certificate are read by `vigil api --config`.
    watchdog_device: str = ""
    api_listen: str = ""
    api_cert: str = ""
    api_key: str = ""
    fencing_kind: str = ""  # "redfish" | "ipmi"; empty: no fencing
    fencing_address: str = ""
    fencing_user: str = ""
    fencing_password_file: str = ""
    fencing_port: int = 0  # 0: the protocol's own (443 for Redfish, 623 for IPMI)
    fencing_ca: str = ""  # Redfish: the CA that signed the BMC's certificate; empty: not verified
    fencing_timeout_s: float = 5.0
    fencing_hung_after_s: float = 1.5  # heartbeat silence, lease alive: fence (0: only after the lease)

    def timing(self) -> Timing:
        """The policies' timings this host runs with (lease, heartbeat grace, watchdog)."""
        return Timing(lease_ttl=self.lease_ttl, hb_grace=self.hb_grace_s, watchdog=self.watchdog_s)

    @classmethod
    def load(cls, path: str | Path) -> "AgentConfig":
        """Read vigil.toml (or, for one more release, an old agent.json) into an AgentConfig;
        a file vigil refuses raises ConfigError (a SpecError) naming every bad key."""
        p = Path(path)
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError(f"cannot read agent config {path}: {e}") from None
        if p.suffix == ".json":
            return cls._from_json(text, path)
        return cls(**parse_toml(text, str(path)))

    @classmethod
    def _from_json(cls, text: str, path: str | Path) -> "AgentConfig":
        try:
            data: dict[str, Any] = json.loads(text)
        except ValueError as e:
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

    def to_toml(self) -> str:
        """This configuration as vigil.toml text (keys at their default are left out)."""
        return render_toml(dataclasses.asdict(self))

    def write(self, path: str | Path) -> None:
        """Write vigil.toml atomically (a reader never sees half a file). The text is read
        back first, so vigil never writes a file it would refuse."""
        text = self.to_toml()
        parse_toml(text, str(path))
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(p)


def config_problems(path: str | Path) -> list[str]:
    """Every problem with the config file at ``path`` (one line each); empty when it is good."""
    try:
        AgentConfig.load(path)
    except ConfigError as e:
        return list(e.problems)
    except SpecError as e:
        return [str(e)]
    return []


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
