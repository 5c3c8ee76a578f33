"""How a process reaches etcd: the endpoints and the client certificate, from a host's
vigil.toml (agents, ``vigil api --config``) or, for the CLI on the lab's machine, from the
lab's cluster file and ``$VIGIL_ETCD_CA`` / ``$VIGIL_ETCD_CERT`` / ``$VIGIL_ETCD_KEY``."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from vigil.store.tls import EtcdTLS

if TYPE_CHECKING:
    from vigil.config import AgentConfig

LAB_CLUSTER_FILE = Path("/run/vigil-lab/cluster.json")


def etcd_tls(cfg: "AgentConfig") -> EtcdTLS | None:
    """The config's etcd client credentials (None when it gives no etcd.ca)."""
    return EtcdTLS.of(cfg.etcd_ca, cfg.etcd_cert, cfg.etcd_key, cfg.etcd_server_name)


def cluster_tls(explicit: str | None = None) -> EtcdTLS | None:
    """etcd client credentials for the CLI: $VIGIL_ETCD_CA/CERT/KEY, else the lab's, but
    only when the endpoints are the lab's too (no ``explicit`` endpoints, no $VIGIL_ETCD):
    as vigil.config.cluster_endpoints finds them."""
    ca = os.environ.get("VIGIL_ETCD_CA")
    if ca:
        return EtcdTLS.of(ca, os.environ.get("VIGIL_ETCD_CERT", ""), os.environ.get("VIGIL_ETCD_KEY", ""))
    if explicit or os.environ.get("VIGIL_ETCD"):
        return None
    try:
        t = json.loads(LAB_CLUSTER_FILE.read_text()).get("etcd_tls") or {}
    except (OSError, ValueError):
        return None
    return EtcdTLS.of(t.get("ca", ""), t.get("cert", ""), t.get("key", ""))
