"""`vigil cluster init / add-host / remove-host`: what the cluster directory holds (every
certificate signed by the CA and naming its host, the members' /etc/default/etcd TLS only,
each bundle's vigil.toml a file the agent starts with), and what removing a host does."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import stat
import tarfile
from dataclasses import asdict
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from vigil.bootstrap import cluster_dir as CD
from vigil.bootstrap import etcd_member
from vigil.cli import app
from vigil.config import AgentConfig, config_problems
from vigil.model import HostInfo, SpecError
from vigil.service import Conflict
from vigil.service.host_removal import remove_host_records
from vigil.sim.store import MemoryStore
from vigil.store import keys as K

MEMBERS = {"h1": "10.0.0.1", "h2": "10.0.0.2", "h3": "10.0.0.3"}


def load(p: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), {str(i) for i in san.get_values_for_type(x509.IPAddress)}


def usages(cert: x509.Certificate) -> set:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


@pytest.fixture
def cluster(tmp_path: Path) -> CD.Cluster:
    return CD.init(tmp_path / "c", MEMBERS, "test")


def test_init_makes_a_ca_and_member_certificates_that_verify_and_name_their_host(cluster: CD.Cluster) -> None:
    ca = load(cluster.ca_dir / "ca-cert.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert stat.S_IMODE((cluster.ca_dir / "ca-key.pem").stat().st_mode) == 0o600
    for h, addr in MEMBERS.items():
        tls = cluster.bundle(h) / "etc" / "vigil" / "tls"
        certs = sorted(p for p in tls.rglob("*-cert.pem") if p.name != "ca-cert.pem")
        assert {p.relative_to(tls).as_posix() for p in certs} == {
            "etcd/client-cert.pem", "etcd/server-cert.pem", "etcd/peer-cert.pem", "api/server-cert.pem",
            "migration/server-cert.pem", "migration/client-cert.pem"}
        for p in certs:
            c = load(p)
            c.verify_directly_issued_by(ca)  # raises if not signed by the cluster CA
            assert addr in sans(c)[1], p
            assert stat.S_IMODE(p.with_name(p.name.replace("-cert", "-key")).stat().st_mode) == 0o600
        server = load(tls / "etcd" / "server-cert.pem")
        dns, ips = sans(server)
        assert {"vigil-etcd", h} <= dns and ips == {addr, "127.0.0.1"}
        both = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert usages(server) == both and usages(load(tls / "etcd" / "peer-cert.pem")) == both
        assert usages(load(tls / "etcd" / "client-cert.pem")) == {ExtendedKeyUsageOID.CLIENT_AUTH}
        assert (tls / "etcd" / "ca-cert.pem").read_bytes() == (cluster.ca_dir / "ca-cert.pem").read_bytes()
    admin = json.loads((cluster.dir / "admin" / "admin.json").read_text())
    assert admin["user"] == "admin" and len(admin["password"]) >= 16
    assert stat.S_IMODE((cluster.dir / "admin" / "admin.json").stat().st_mode) == 0o600
    load(Path(cluster.admin_tls().cert)).verify_directly_issued_by(ca)


def test_each_member_gets_a_tls_only_etcd_default_file(cluster: CD.Cluster) -> None:
    for h, addr in MEMBERS.items():
        text = (cluster.bundle(h) / "etc" / "default" / "etcd").read_text()
        env = etcd_member.parse(text)
        assert "http://" not in text
        assert env["ETCD_NAME"] == h and env["ETCD_DATA_DIR"] == "/var/lib/etcd/vigil"
        assert env["ETCD_LISTEN_CLIENT_URLS"] == f"https://{addr}:2379,https://127.0.0.1:2379"
        assert env["ETCD_LISTEN_PEER_URLS"] == env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == f"https://{addr}:2380"
        assert env["ETCD_INITIAL_CLUSTER"] == ",".join(f"{n}=https://{a}:2380" for n, a in MEMBERS.items())
        assert env["ETCD_CLIENT_CERT_AUTH"] == env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
        assert env["ETCD_CERT_FILE"] == "/etc/vigil/tls/etcd/server-cert.pem"
        assert env["ETCD_PEER_CERT_FILE"] == "/etc/vigil/tls/etcd/peer-cert.pem"
        assert env["ETCD_TRUSTED_CA_FILE"] == env["ETCD_PEER_TRUSTED_CA_FILE"] == "/etc/vigil/tls/etcd/ca-cert.pem"
        assert env["ETCD_CLIENT_CRL_FILE"] == "/etc/vigil/tls/etcd/crl.pem"
        assert etcd_member.parse(etcd_member.render(env)) == env
    tokens = {etcd_member.parse((cluster.bundle(h) / "etc/default/etcd").read_text())["ETCD_INITIAL_CLUSTER_TOKEN"]
              for h in MEMBERS}
    assert len(tokens) == 1


def test_member_raft_timings_keep_a_1_s_election_and_etcds_5_to_1_rule(cluster: CD.Cluster) -> None:
    """A dead raft leader is replaced after the same election timeout as with etcd's
    defaults (failover must not get slower); heartbeats are as sparse as etcd allows
    (election >= 5 x heartbeat, or the member refuses to start) to keep idle members cheap."""
    for h in MEMBERS:
        env = etcd_member.parse((cluster.bundle(h) / "etc" / "default" / "etcd").read_text())
        beat, election = int(env["ETCD_HEARTBEAT_INTERVAL"]), int(env["ETCD_ELECTION_TIMEOUT"])
        assert election == 1000
        assert 5 * beat <= election and election % beat == 0  # whole ticks: etcd counts the timeout in them
        assert env["ETCD_PRE_VOTE"] == "true"


def test_each_bundle_has_a_vigil_toml_the_agent_starts_with(cluster: CD.Cluster) -> None:
    for h, addr in MEMBERS.items():
        path = cluster.bundle(h) / "etc" / "vigil" / "vigil.toml"
        assert config_problems(path) == []
        cfg = AgentConfig.load(path)
        assert (cfg.host, cfg.address) == (h, addr)
        assert cfg.etcd_endpoints == ("10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379")
        assert (cfg.etcd_ca, cfg.etcd_cert, cfg.etcd_key) == (
            "/etc/vigil/tls/etcd/ca-cert.pem", "/etc/vigil/tls/etcd/client-cert.pem", "/etc/vigil/tls/etcd/client-key.pem")
        assert cfg.api_listen == f"{addr}:8443" and cfg.tls_dir == "/etc/vigil/tls/migration"
        assert cfg.peers == {n: a for n, a in MEMBERS.items() if n != h}
        r = CliRunner().invoke(app, ["config", "check", str(path)])
        assert r.exit_code == 0 and r.stdout.strip() == "ok"


def test_init_refuses_member_counts_other_than_3_or_5_and_a_second_init(tmp_path: Path) -> None:
    for n in (1, 2, 4, 6):
        with pytest.raises(SpecError, match="give 3 or 5"):
            CD.init(tmp_path / f"c{n}", {f"h{i}": f"10.0.0.{i}" for i in range(1, n + 1)})
    CD.init(tmp_path / "c", MEMBERS)
    with pytest.raises(SpecError, match="already holds a cluster"):
        CD.init(tmp_path / "c", MEMBERS)
    with pytest.raises(SpecError, match="not an IP address"):
        CD.init(tmp_path / "d", {"h1": "10.0.0.1", "h2": "10.0.0.2", "h3": "nowhere"})


def test_add_host_makes_a_bundle_without_etcd_member_files(cluster: CD.Cluster) -> None:
    out = CD.add_host(CD.Cluster.load(cluster.dir), "h4", "10.0.0.4", tar=True)
    c = CD.Cluster.load(cluster.dir)
    assert out == c.dir / "hosts" / "h4.tar.gz" and c.hosts["h4"] == "10.0.0.4" and "h4" not in c.members
    b = c.bundle("h4")
    assert not (b / "etc" / "default").exists() and not (b / "etc/vigil/tls/etcd/server-cert.pem").exists()
    client = load(b / "etc/vigil/tls/etcd/client-cert.pem")
    client.verify_directly_issued_by(load(c.ca_dir / "ca-cert.pem"))
    assert sans(client) == ({"h4"}, {"10.0.0.4"})
    with tarfile.open(out) as t:
        names = set(t.getnames())
    assert {"etc/vigil/vigil.toml", "etc/vigil/tls/etcd/client-key.pem", "etc/vigil/tls/migration/ca-cert.pem"} <= names
    assert config_problems(b / "etc/vigil/vigil.toml") == []
    assert AgentConfig.load(c.bundle("h1") / "etc/vigil/vigil.toml").peers["h4"] == "10.0.0.4"  # refreshed
    with pytest.raises(SpecError, match="already in the cluster"):
        CD.add_host(c, "h4", "10.0.0.9")
    with pytest.raises(SpecError, match="already h1's"):
        CD.add_host(c, "h5", "10.0.0.1")
    r = CliRunner().invoke(app, ["cluster", "add-host", "h5", "10.0.0.5", "--dir", str(c.dir)])
    assert r.exit_code == 0, r.output
    assert config_problems(c.bundle("h5") / "etc/vigil/vigil.toml") == []


def test_remove_host_revokes_its_certificates_and_drops_its_bundle(cluster: CD.Cluster) -> None:
    c = CD.Cluster.load(cluster.dir)
    CD.add_host(c, "h4", "10.0.0.4")
    serials = CD.host_serials(c, "h4")
    revoked = CD.remove_host(c, "h4")
    assert sorted(revoked) == sorted(serials) and len(serials) == 4
    ca = load(c.ca_dir / "ca-cert.pem")
    for crl_path in [c.ca_dir / "crl.pem"] + [c.bundle(m) / "etc/vigil/tls/etcd/crl.pem" for m in MEMBERS]:
        crl = x509.load_pem_x509_crl(crl_path.read_bytes())
        assert crl.is_signature_valid(ca.public_key())
        assert all(crl.get_revoked_certificate_by_serial_number(s) is not None for s in serials)
    assert not c.bundle("h4").exists()
    again = CD.Cluster.load(c.dir)
    assert "h4" not in again.hosts and again.removed == ["h4"]
    assert "h4" not in AgentConfig.load(c.bundle("h1") / "etc/vigil/vigil.toml").peers
    with pytest.raises(SpecError, match="etcd member"):
        CD.remove_host(again, "h1")
    with pytest.raises(SpecError, match="no host"):
        CD.remove_host(again, "h9")


def test_in_place_bundles_name_their_own_files(tmp_path: Path) -> None:
    c = CD.init(tmp_path / "c", {"a": "10.1.0.1"}, in_place=True, data_dir=str(tmp_path / "etcd/{name}"), counts=(1,))
    cfg = AgentConfig.load(c.bundle("a") / "etc/vigil/vigil.toml")
    for p in (cfg.etcd_ca, cfg.etcd_cert, cfg.etcd_key, cfg.api_cert, cfg.api_key, cfg.tls_dir):
        assert p.startswith(str(c.bundle("a"))) and Path(p).exists(), p
    env = etcd_member.parse((c.bundle("a") / "etc/default/etcd").read_text())
    assert env["ETCD_DATA_DIR"] == str(tmp_path / "etcd/a")
    assert all(Path(env[k]).exists() for k in env if k.endswith("_FILE"))


def test_a_bad_etcd_tls_value_is_refused_naming_its_key(tmp_path: Path) -> None:
    base = '[host]\nname = "h1"\naddress = "10.0.0.1"\n[paths]\nrun_dir = "/run/vigil"\n[etcd]\nendpoints = ["10.0.0.1:2379"]\n'
    for extra, problem in (('server_name = "bad name!"', "etcd.server_name: must be a host name"),
                           ('ca = "relative.pem"', "etcd.ca: must be an absolute path"),
                           ('cert = "/c.pem"\nkey = "/k.pem"', "etcd.ca: required with etcd.cert")):
        p = tmp_path / "v.toml"
        p.write_text(base + extra + "\n")
        probs = config_problems(p)
        assert len(probs) == 1 and problem in probs[0], probs


def _host_store(vm_on: str | None = None, alive: bool = False) -> MemoryStore:
    s = MemoryStore(now=lambda: 0.0)

    async def fill() -> None:
        await s.put(K.HOSTS + "h4", asdict(HostInfo(name="h4", address="10.0.0.4", memory_mb=1024, cpus=2,
                                                    datastores=(), networks=())))
        await s.put(K.HOSTSTATE + "h4", {"state": "down"})
        if alive:
            await s.put(K.ALIVE + "h4", {"since": 0})
        if vm_on:
            await s.put(K.OWN + "vm1", vm_on)
            await s.put(K.VMSTATUS + "vm1", {"host": vm_on, "state": "running"})
    asyncio.run(fill())
    return s


def test_removing_a_host_from_etcd_is_refused_while_it_runs_vms_or_its_agent() -> None:
    for s, why in ((_host_store(vm_on="h4"), "runs or is assigned VMs (vm1)"), (_host_store(alive=True), "agent is running")):
        before = asyncio.run(s.snapshot())
        with pytest.raises(Conflict, match=r"h4 is still in use: .*" + why.replace("(", r"\(").replace(")", r"\)")):
            asyncio.run(remove_host_records(s, "h4"))
        assert asyncio.run(s.snapshot()) == before
    s = _host_store(vm_on="h1")
    assert sorted(asyncio.run(remove_host_records(s, "h4"))) == [K.HOSTS + "h4", K.HOSTSTATE + "h4"]
    snap = asyncio.run(s.snapshot())
    assert K.HOSTS + "h4" not in snap and K.HOSTSTATE + "h4" not in snap
    assert any(k.startswith(K.EVENTS) and v.value.get("kind") == "host-removed" for k, v in snap.items())
    assert asyncio.run(remove_host_records(s, "h4")) == []


def test_addresses_in_sans_are_ip_addresses(cluster: CD.Cluster) -> None:
    _, ips = sans(load(cluster.bundle("h1") / "etc/vigil/tls/api/server-cert.pem"))
    assert all(ipaddress.ip_address(i) for i in ips)


def test_the_cli_takes_the_labs_etcd_certificate_only_with_the_labs_endpoints(tmp_path: Path, monkeypatch) -> None:
    from vigil.config import etcd_client
    from vigil.store.etcd import Store
    from vigil.store.tls import TLSClient

    f = tmp_path / "cluster.json"
    f.write_text(json.dumps({"etcd_endpoints": ["10.77.0.1:2379"], "etcd_tls": {"ca": "/a", "cert": "/c", "key": "/k"}}))
    monkeypatch.setattr(etcd_client, "LAB_CLUSTER_FILE", f)
    for k in ("VIGIL_ETCD", "VIGIL_ETCD_CA", "VIGIL_ETCD_CERT", "VIGIL_ETCD_KEY"):
        monkeypatch.delenv(k, raising=False)
    tls = etcd_client.cluster_tls()
    assert tls is not None and (tls.ca, tls.cert, tls.key, tls.server_name) == ("/a", "/c", "/k", "vigil-etcd")
    assert etcd_client.cluster_tls("127.0.0.1:2379") is None  # other endpoints: not the lab's certificate
    monkeypatch.setenv("VIGIL_ETCD_CA", "/x")
    assert etcd_client.cluster_tls("127.0.0.1:2379").ca == "/x"  # type: ignore[union-attr]
    assert isinstance(Store(["127.0.0.1:1"], tls=tls)._client, TLSClient)
    assert not isinstance(Store(["127.0.0.1:1"])._client, TLSClient)
