"""The cluster directory ``vigil cluster init`` makes and ``add-host`` / ``remove-host``
change: kept on the operator's machine (it holds the CA's key), never on the hosts.

    DIR/cluster.json              name, etcd members, hosts, where bundles point
    DIR/ca/                       ca-cert.pem, ca-key.pem, revoked.txt, crl.pem
    DIR/admin/admin.json          the first admin's user name and password (0600)
    DIR/admin/etcd/               the operator's etcd client certificate
    DIR/hosts/NAME/               NAME's bundle, laid out as on the host:
        etc/vigil/vigil.toml      the host's configuration (vigil/config's format)
        etc/vigil/tls/etcd/       ca-cert.pem, client-cert.pem/-key.pem (agent and API);
                                  members also server-*, peer-* and crl.pem
        etc/vigil/tls/migration/  QEMU's tls-creds-x509 files (vigil.pki.create_host_certs)
        etc/vigil/tls/api/        the API server's certificate, naming the host's address
        etc/default/etcd          a member's ETCD_* settings (Debian's etcd.service)

Paths inside the bundle's files are where the files are on the host (``/etc/vigil/...``),
or, with ``in_place`` (the lab, tests), the bundle's own files: one host's bundle is then
its configuration as it stands.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import secrets
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from vigil import pki
from vigil.bootstrap import etcd_member
from vigil.config import AgentConfig
from vigil.model import NAME_RE, SpecError
from vigil.store.tls import DEFAULT_SERVER_NAME, EtcdTLS

CLUSTER_FILE = "cluster.json"
ADMIN_USER = "admin"
API_PORT = 8443
DEFAULT_DATA_DIR = "/var/lib/etcd/vigil"  # not Debian's default: etcd-server starts once on install with its
# own single-member settings there, and a member restarted over that data would keep them
MEMBER_COUNTS = (3, 5)  # for `vigil cluster init`: a quorum that survives 1 or 2 failures


@dataclass
class Cluster:
    """cluster.json: what the directory holds."""

    dir: Path
    name: str
    members: dict[str, str]  # etcd member -> address
    hosts: dict[str, str] = field(default_factory=dict)  # every host (members too) -> address
    in_place: bool = False
    data_dir: str = DEFAULT_DATA_DIR  # "{name}" is the member's name
    token: str = ""  # etcd's initial cluster token
    removed: list[str] = field(default_factory=list)

    @property
    def ca_dir(self) -> Path:
        return self.dir / "ca"

    @property
    def endpoints(self) -> list[str]:
        return [f"{a}:{etcd_member.CLIENT_PORT}" for a in self.members.values()]

    def bundle(self, host: str) -> Path:
        return self.dir / "hosts" / host

    def on_host(self, host: str, path: str) -> str:
        """Where ``path`` (absolute, as on a host) is in the files of ``host``'s bundle."""
        return str(self.bundle(host)) + path if self.in_place else path

    def admin_tls(self) -> EtcdTLS:
        d = self.dir / "admin" / "etcd"
        return EtcdTLS(str(d / pki.CA_CERT), str(d / "client-cert.pem"), str(d / "client-key.pem"))

    def admin_password(self) -> str:
        return str(json.loads((self.dir / "admin" / "admin.json").read_text())["password"])

    def save(self) -> None:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "dir"}
        tmp = self.dir / (CLUSTER_FILE + ".tmp")
        tmp.write_text(json.dumps(d, indent=2) + "\n")
        os.replace(tmp, self.dir / CLUSTER_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> "Cluster":
        d = Path(directory)
        try:
            data = json.loads((d / CLUSTER_FILE).read_text())
        except (OSError, ValueError) as e:
            raise SpecError(f"{d}: not a cluster directory ({e}); make one with 'vigil cluster init'") from None
        return cls(dir=d, **data)


def _check_host(name: str, address: str) -> None:
    if not NAME_RE.match(name):
        raise SpecError(f"host name {name!r}: lowercase letters, digits, '.', '_', '-'; at most 63")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise SpecError(f"{name}: address {address!r} is not an IP address") from None


def _private_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def init(directory: str | Path, members: dict[str, str], name: str = "vigil", *, in_place: bool = False,
         data_dir: str = DEFAULT_DATA_DIR, counts: tuple[int, ...] = MEMBER_COUNTS) -> Cluster:
    """A new cluster directory: the CA, the first admin's credentials, and a bundle for
    each etcd member (``members``: name -> address, 3 or 5 of them)."""
    d = Path(directory)
    if (d / CLUSTER_FILE).exists():
        raise SpecError(f"{d} already holds a cluster ({d / CLUSTER_FILE}); add hosts with 'vigil cluster add-host'")
    if len(members) not in counts:
        raise SpecError(f"{len(members)} etcd members: give {' or '.join(map(str, counts))} "
                        "(an odd number keeps a quorum through 1 or 2 failures)")
    for h, a in members.items():
        _check_host(h, a)
    if len(set(members.values())) != len(members):
        raise SpecError("two members share an address")
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    c = Cluster(dir=d, name=name, members=dict(members), in_place=in_place, data_dir=data_dir,
                token=f"{name}-{secrets.token_hex(6)}")
    pki.create_ca(c.ca_dir, name=f"{name} cluster CA")
    pki.revoke(c.ca_dir, [])  # an empty CRL: the members read it from the start
    admin = d / "admin"
    (admin / "etcd").mkdir(parents=True, exist_ok=True)
    os.chmod(admin, 0o700)
    _private_file(admin / "admin.json", json.dumps({"user": ADMIN_USER, "password": secrets.token_urlsafe(15)},
                                                   indent=2) + "\n")
    shutil.copy(c.ca_dir / pki.CA_CERT, admin / "etcd" / pki.CA_CERT)
    pki.issue(c.ca_dir, admin / "etcd", "client", f"{name}-admin")
    c.save()
    for h, a in members.items():
        add_host(c, h, a)
    return c


def add_host(c: Cluster, host: str, address: str, tar: bool = False) -> Path:
    """``host``'s certificates and bundle (see the module's docstring); returns the bundle
    (or its tarball with ``tar``)."""
    _check_host(host, address)
    if host in c.hosts:
        raise SpecError(f"{host} is already in the cluster ({c.hosts[host]}); remove it first")
    if address in c.hosts.values():
        raise SpecError(f"address {address} is already {[h for h, a in c.hosts.items() if a == address][0]}'s")
    b = c.bundle(host)
    if b.exists():
        shutil.rmtree(b)
    etc = b / "etc" / "vigil"
    tls = etc / "tls"
    etcd_dir, api_dir = tls / "etcd", tls / "api"
    for p in (etcd_dir, api_dir):
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, 0o700)
    shutil.copy(c.ca_dir / pki.CA_CERT, etcd_dir / pki.CA_CERT)
    pki.issue(c.ca_dir, etcd_dir, "client", host, ips=(address,))
    pki.issue(c.ca_dir, api_dir, "server", host, ips=(address,))
    pki.create_host_certs(c.ca_dir, tls / "migration", host, ips=(address,))
    member = host in c.members
    if member:
        pki.issue(c.ca_dir, etcd_dir, "server", host, ips=(address, "127.0.0.1"),
                  usages=("server", "client"), dns=(DEFAULT_SERVER_NAME, "localhost"))
        pki.issue(c.ca_dir, etcd_dir, "peer", host, ips=(address,), usages=("server", "client"))
        shutil.copy(c.ca_dir / pki.CRL, etcd_dir / pki.CRL)
        _write_member_defaults(c, host)
    c.hosts[host] = address
    c.save()
    for h in c.hosts:  # every bundle's [peers] lists every other host
        write_config(c, h)
    if tar:
        return _tarball(c, host)
    return b


def write_config(c: Cluster, host: str) -> Path:
    """``host``'s etc/vigil/vigil.toml in its bundle; returns its path."""
    on = lambda p: c.on_host(host, p)  # noqa: E731
    et = "/etc/vigil/tls/etcd/"
    path = c.bundle(host) / "etc" / "vigil" / "vigil.toml"
    address = c.hosts[host]
    AgentConfig(
        host=host, address=address, etcd_endpoints=tuple(c.endpoints), run_dir=on("/run/vigil"),
        datastores={}, peers={h: a for h, a in c.hosts.items() if h != host},
        tls_dir=on("/etc/vigil/tls/migration"),
        etcd_ca=on(et + pki.CA_CERT), etcd_cert=on(et + "client-cert.pem"), etcd_key=on(et + "client-key.pem"),
        api_listen=f"{address}:{API_PORT}", api_cert=on("/etc/vigil/tls/api/server-cert.pem"),
        api_key=on("/etc/vigil/tls/api/server-key.pem"),
    ).write(path)
    return path


def _write_member_defaults(c: Cluster, host: str) -> None:
    et = "/etc/vigil/tls/etcd/"
    on = lambda p: c.on_host(host, p)  # noqa: E731
    files = etcd_member.MemberFiles(ca=on(et + pki.CA_CERT), cert=on(et + "server-cert.pem"),
                                    key=on(et + "server-key.pem"), peer_cert=on(et + "peer-cert.pem"),
                                    peer_key=on(et + "peer-key.pem"), crl=on(et + pki.CRL))
    env = etcd_member.member_env(host, c.members[host], c.members, files, c.data_dir.format(name=host), c.token)
    default = c.bundle(host) / "etc" / "default"
    default.mkdir(parents=True, exist_ok=True)
    (default / "etcd").write_text(etcd_member.render(env))


def _tarball(c: Cluster, host: str) -> Path:
    out = c.dir / "hosts" / f"{host}.tar.gz"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as t:
        t.add(c.bundle(host) / "etc", arcname="etc")
    return out


def host_serials(c: Cluster, host: str) -> list[int]:
    """Serial numbers of every certificate in ``host``'s bundle."""
    return [pki.serial_of(p) for p in sorted((c.bundle(host) / "etc" / "vigil" / "tls").rglob("*-cert.pem"))
            if p.name != pki.CA_CERT]


def remove_host(c: Cluster, host: str) -> list[int]:
    """Revoke ``host``'s certificates (a new crl.pem, also put in every member's bundle:
    copy it to the members), and drop its bundle; returns the revoked serials. An etcd
    member is refused: take it out of etcd first (``etcdctl member remove``)."""
    if host not in c.hosts:
        raise SpecError(f"no host {host!r} in {c.dir} (hosts: {', '.join(c.hosts) or 'none'})")
    if host in c.members:
        raise SpecError(f"{host} is an etcd member: replace or remove the member in etcd first "
                        "(etcdctl member remove), then the host")
    serials = host_serials(c, host)
    pki.revoke(c.ca_dir, serials)
    for m in c.members:
        shutil.copy(c.ca_dir / pki.CRL, c.bundle(m) / "etc" / "vigil" / "tls" / "etcd" / pki.CRL)
    shutil.rmtree(c.bundle(host), ignore_errors=True)
    (c.dir / "hosts" / f"{host}.tar.gz").unlink(missing_ok=True)
    del c.hosts[host]
    c.removed.append(host)
    c.save()
    for h in c.hosts:
        write_config(c, h)
    return serials
