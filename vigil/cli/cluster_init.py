"""`vigil cluster init / add-host / remove-host / admin`: bootstrapping a real cluster.

Run on the operator's machine; the cluster directory (vigil.bootstrap.cluster_dir) holds
the CA's key and stays there. Each host gets its bundle (``DIR/hosts/NAME``, or
``NAME.tar.gz`` with ``--tar``) unpacked at ``/``: its /etc/vigil/vigil.toml, certificates,
and for an etcd member /etc/default/etcd. docs/cluster.md tells the steps.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer
from rich.markup import escape

from vigil.cli.cluster import app
from vigil.cli.common import fail, friendly, progress as _progress

def progress(msg: str) -> None:
    _progress(escape(msg))


DIR_OPT = typer.Option(Path("vigil-cluster"), "--dir", envvar="VIGIL_CLUSTER_DIR",
                       help="the cluster directory (keep it off the hosts: it holds the CA's key)")


def _members(specs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in specs:
        name, sep, address = s.partition("=")
        if not sep or not name or not address:
            fail(f"--member {s!r}: expected NAME=ADDRESS")
        if name in out:
            fail(f"--member {name} given twice")
        out[name] = address
    return out


@app.command("init")
@friendly
def init(
    member: List[str] = typer.Option(..., "--member", help="an etcd member host, NAME=ADDRESS (3 or 5 of them)"),
    directory: Path = DIR_OPT,
    name: str = typer.Option("vigil", "--name", help="the cluster's name (in its CA and etcd's cluster token)"),
    data_dir: str = typer.Option("/var/lib/etcd/vigil", "--etcd-data-dir", help="the members' etcd data dir"),
) -> None:
    """Make a cluster directory: a CA, the first admin's credentials, and each etcd
    member's certificates, /etc/default/etcd and vigil.toml."""
    from vigil.bootstrap import cluster_dir

    c = cluster_dir.init(directory, _members(member), name, data_dir=data_dir)
    progress(f"cluster {c.name} in {c.dir}: CA {c.ca_dir / 'ca-cert.pem'}, etcd members {', '.join(c.members)}")
    for h in c.members:
        progress(f"{h}: copy {c.bundle(h)}/etc to / on {h}, chown -R etcd: /etc/vigil/tls/etcd "
                 "(Debian's etcd runs as etcd), then: systemctl restart etcd")
    progress(f"once etcd runs on the members: vigil cluster admin --dir {c.dir} (the first admin, "
             f"password in {c.dir / 'admin' / 'admin.json'})")


@app.command("add-host")
@friendly
def add_host(
    host: str = typer.Argument(..., help="the host's name"),
    address: str = typer.Argument(..., help="its address on the cluster network"),
    directory: Path = DIR_OPT,
    tar: bool = typer.Option(False, "--tar", help="also pack the bundle as DIR/hosts/NAME.tar.gz"),
) -> None:
    """A host's certificates and its config bundle to copy over."""
    from vigil.bootstrap import cluster_dir

    c = cluster_dir.Cluster.load(directory)
    out = cluster_dir.add_host(c, host, address, tar=tar)
    progress(f"{host}: bundle {out} (etc/vigil/vigil.toml: add its [datastores] and [networks]); "
             "the other hosts' bundles list it in [peers]")


@app.command("remove-host")
@friendly
def remove_host(
    host: str = typer.Argument(..., help="the host to remove"),
    directory: Path = DIR_OPT,
    keep_records: bool = typer.Option(False, "--keep-records", help="leave etcd alone (it cannot be reached)"),
) -> None:
    """Remove a host: its records leave etcd (refused while it runs VMs or its agent
    runs), its certificates are revoked (copy the new crl.pem to the members) and its
    bundle is removed from the directory."""
    from vigil.bootstrap import cluster_dir
    from vigil.service.host_removal import remove_host_records
    from vigil.store.etcd import run_with_store

    c = cluster_dir.Cluster.load(directory)
    if host not in c.hosts:
        fail(f"no host {host!r} in {c.dir} (hosts: {', '.join(c.hosts) or 'none'})")
    if host in c.members:
        fail(f"{host} is an etcd member: replace or remove the member in etcd first (etcdctl member remove)")
    if not keep_records:
        keys = run_with_store(c.endpoints, lambda s: remove_host_records(s, host), timeout=5, tls=c.admin_tls())
        progress(f"{host}: {len(keys)} records removed from etcd" if keys else f"{host}: no records in etcd")
    serials = cluster_dir.remove_host(c, host)
    progress(f"{host}: {len(serials)} certificates revoked; copy {c.ca_dir / 'crl.pem'} to "
             f"/etc/vigil/tls/etcd/crl.pem on {', '.join(c.members)}")


@app.command("admin")
@friendly
def admin(directory: Path = DIR_OPT) -> None:
    """Write the first admin (user and password of DIR/admin/admin.json) to etcd; an admin
    that exists is left as it is."""
    from vigil.bootstrap.admin import create_admin
    from vigil.bootstrap.cluster_dir import Cluster

    c = Cluster.load(directory)
    made = create_admin(c)
    progress(f"admin {'created' if made['created'] else 'already there (unchanged)'}; "
             f"its password is in {c.dir / 'admin' / 'admin.json'}")
