"""The lab's cluster directory: ``vigil cluster init`` and ``add-host`` for the lab's hosts,
so the lab runs on exactly what a real cluster is bootstrapped with (the CA, the members'
``etc/default/etcd``, each host's ``etc/vigil/vigil.toml`` and certificates).

The directory is ``/run/vigil-lab/cluster`` with bundles in place (their files name their
own paths). Each host's vigil.toml is the bundle's, with what only the lab knows filled in
(its datastores, watchdog file, VM network, run dir, sizes); the CLI of root on this
machine reaches etcd with the directory's operator certificate (the lab's cluster file).
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from vigil.bootstrap import cluster_dir
from vigil.bootstrap.cluster_dir import Cluster
from vigil.config import AgentConfig
from vigil.store.tls import EtcdTLS

from .layout import ETCD_DATA_DIR, RUN_DIR

CLUSTER_DIR = RUN_DIR / "cluster"


def build(hosts: dict[str, str], members: list[str]) -> Cluster:
    """The directory for ``hosts`` (name -> address), the first ``members`` running etcd;
    made anew at each `lab up` (one left by an `up` that was killed is removed first)."""
    shutil.rmtree(CLUSTER_DIR, ignore_errors=True)
    c = cluster_dir.init(CLUSTER_DIR, {h: hosts[h] for h in members}, name="vigil-lab", in_place=True,
                         data_dir=str(ETCD_DATA_DIR / "{name}"), counts=tuple(range(1, 6)))
    for h, a in hosts.items():
        if h not in c.hosts:
            cluster_dir.add_host(c, h, a)
    return c


def config_path(c: Cluster, host: str) -> Path:
    return c.bundle(host) / "etc" / "vigil" / "vigil.toml"


def etcd_defaults(c: Cluster, host: str) -> Path:
    return c.bundle(host) / "etc" / "default" / "etcd"


def write_agent_config(c: Cluster, host: str, **lab: Any) -> AgentConfig:
    """The bundle's vigil.toml with the lab's own settings ``lab`` (AgentConfig fields)."""
    path = config_path(c, host)
    cfg = dataclasses.replace(AgentConfig.load(path), **lab)
    cfg.write(path)
    return cfg


def operator_tls(c: Cluster) -> dict[str, str]:
    """The operator's etcd client certificate, as the lab's cluster file carries it."""
    t: EtcdTLS = c.admin_tls()
    return {"ca": t.ca, "cert": t.cert, "key": t.key}
