"""vigil.toml: the reader refuses bad files naming every bad key, the writer's text reads
back as the same AgentConfig, the old agent.json still loads, docs/config.md lists every key."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from typer.testing import CliRunner

from vigil.cli import app
from vigil.config import AgentConfig, ConfigError, config_problems
from vigil.config.toml_file import REQUIRED, SECTIONS, Table, defaults, parse_toml
from vigil.model import SpecError

MINIMAL = """
[host]
name = "host1"
address = "10.0.0.1"

[etcd]
endpoints = ["10.0.0.1:2379"]

[paths]
run_dir = "/run/vigil"
"""

FULL = Path(__file__).parents[2] / "docs" / "config.md"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_toml(text)
    return e.value.problems


def one_problem(text: str) -> str:
    ps = problems(text)
    assert len(ps) == 1, ps
    return ps[0]


def test_a_minimal_file_gives_the_defaults():
    cfg = AgentConfig(**parse_toml(MINIMAL))
    assert cfg == AgentConfig(host="host1", address="10.0.0.1", etcd_endpoints=("10.0.0.1:2379",),
                              run_dir="/run/vigil", datastores={})


def test_the_sections_fill_every_agent_config_field_with_its_default():
    schema = defaults()
    fields = {f.name: f for f in dataclasses.fields(AgentConfig)}
    assert set(schema) == set(fields)
    for name, default in schema.items():
        f = fields[name]
        if default is REQUIRED:
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, name
        elif f.default_factory is not dataclasses.MISSING:
            assert default == f.default_factory(), name
        elif name != "datastores":
            assert default == f.default, name


def test_the_full_example_in_the_docs_reads():
    example = re.search(r"```toml\n(.*?)```", FULL.read_text(), re.S)
    assert example, "docs/config.md has a ```toml example"
    cfg = AgentConfig(**parse_toml(example.group(1)))
    assert cfg.fencing_kind and cfg.etcd_cert and cfg.api_listen and cfg.datastores and cfg.peers


@pytest.mark.parametrize("body, expected", [
    ('[timings]\ntick_s = "fast"', 'vigil.toml: timings.tick_s: must be a positive number, got "fast"'),
    ("[timings]\ntick_s = -1", "timings.tick_s: must be a positive number, got -1"),
    ("[timings]\nhb_grace_s = nan", "timings.hb_grace_s: must be a positive number, got nan"),
    ("[timings]\nlease_ttl = 2.5", "timings.lease_ttl: must be a positive whole number, got 2.5"),
    ("[timings]\nlease_ttl = true", "timings.lease_ttl: must be a positive whole number, got true"),
    ("[timings]\nlease_ttl = 1\ntick_s = 1.0", "timings.lease_ttl: must be greater than timings.tick_s (1.0), got 1"),
    ("[timings]\ncolour = 1", "timings.colour: unknown key (known: lease_ttl, tick_s, hb_grace_s, guest_hb_timeout_s)"),
    ("[colour]\nx = 1", "colour: unknown section"),
    ('colour = "red"', "colour: unknown section"),
    ('[datastores]\nds1 = "mnt/ds1"', 'datastores.ds1: must be an absolute path, got "mnt/ds1"'),
    ('[datastores]\nDS1 = "/mnt/ds1"', "datastores.DS1: is not a valid name"),
    ('[datastores]\n"d s" = "/mnt/ds1"', 'datastores."d s": is not a valid name'),
    ('[networks]\nvmnet = "a-bridge-name-too-long"', "networks.vmnet: must be a bridge name"),
    ('[isolation]\naddresses = ["10.0.0.254", "gateway"]', 'isolation.addresses: item 2: must be an IP address, got "gateway"'),
    ('[isolation]\naddresses = "10.0.0.254"', 'isolation.addresses: must be a list, got "10.0.0.254"'),
    ('[isolation]\naddresses = ["10.0.0.254", "10.0.0.254"]', "isolation.addresses: lists the same value twice"),
    ('[peers]\nhost2 = "10.0.0.300"', 'peers.host2: must be an IP address, got "10.0.0.300"'),
    ('[peers]\nhost1 = "10.0.0.1"', "peers.host1: is this host (host.name)"),
    ('[watchdog]\ndevice = "/dev/watchdog"\nfile = "/run/wd"', "watchdog: give device or file, not both"),
    ("[watchdog]\ntimeout_s = 0", "watchdog.timeout_s: must be a positive number, got 0"),
    ('[fencing]\nkind = "ilo"\naddress = "10.0.1.1"\nuser = "u"\npassword_file = "/etc/vigil/p"',
     'fencing.kind: must be "redfish" or "ipmi", got "ilo"'),
    ('[fencing]\nkind = "ipmi"\naddress = "10.0.1.1"\nuser = "u"', "fencing.password_file: required when [fencing] is given"),
    ('[etcd]\ncert = "/etc/vigil/etcd.crt"', "etcd.key: required with etcd.cert"),
    ('[api]\nkey = "/etc/vigil/api.key"', "api.cert: required with api.key"),
    ('[api]\nlisten = "10.0.0.1"', 'api.listen: must be HOST:PORT, got "10.0.0.1"'),
    ('[metrics]\nlisten = "10.0.0.1:99999"', 'metrics.listen: must be HOST:PORT, got "10.0.0.1:99999"'),
    ("metrics = 3", "metrics: must be a table ([metrics]), got 3"),
    ('[paths]\ncache_dir = "cache"', 'paths.cache_dir: must be an absolute path, got "cache"'),
    ('[host]\nmemory_mb = "2G"', 'host.memory_mb: must be a positive whole number, got "2G"'),
])
def test_one_bad_value_one_message_naming_its_key(body, expected):
    if body.startswith(("[host]", "[paths]", "[etcd]")):
        text = _merge(body)
    elif body.startswith("["):
        text = MINIMAL + "\n" + body + "\n"
    else:  # a top-level key: before the first section
        text = body + "\n" + MINIMAL
    assert expected in one_problem(text)


def _merge(body: str) -> str:
    """MINIMAL with the keys of ``body`` (whose section MINIMAL has) added to that section."""
    section, _, rest = body.partition("\n")
    return MINIMAL.replace(section, f"{section}\n{rest}", 1)


@pytest.mark.parametrize("endpoint, ok", [
    ("10.0.0.1:2379", True), ("etcd1.example:2379", True), ("[::1]:2379", True),
    ("10.0.0.1", False), ("10.0.0.1:0", False), (":2379", False), ("::1:2379", False),
    ("10.0.0.1:23a", False), ("http://10.0.0.1:2379", False), ("a b:1", False),
])
def test_endpoints_are_host_port(endpoint, ok):
    text = MINIMAL.replace('["10.0.0.1:2379"]', f'["{endpoint}"]')
    if ok:
        assert parse_toml(text)["etcd_endpoints"] == (endpoint,)
    else:
        assert 'etcd.endpoints: item 1: must be HOST:PORT' in one_problem(text)


def test_every_problem_is_listed_at_once():
    text = MINIMAL.replace('address = "10.0.0.1"', 'address = "nowhere"').replace(
        'run_dir = "/run/vigil"', 'run_dir = "run"\ncolour = "red"') + '\n[timings]\ntick_s = "fast"\n'
    ps = problems(text)
    assert ps == ['vigil.toml: host.address: must be an IP address, got "nowhere"',
                  'vigil.toml: paths.run_dir: must be an absolute path, got "run"',
                  "vigil.toml: paths.colour: unknown key (known: run_dir, cache_dir, tls_dir)",
                  'vigil.toml: timings.tick_s: must be a positive number, got "fast"']


def test_required_keys():
    ps = problems("")
    assert ps == ["vigil.toml: host.name: required", "vigil.toml: host.address: required",
                  "vigil.toml: etcd.endpoints: required", "vigil.toml: paths.run_dir: required"]
    assert "etcd.endpoints: must list at least one" in one_problem(MINIMAL.replace('["10.0.0.1:2379"]', "[]"))


def test_not_toml_at_all():
    assert one_problem("[host\nname = 1").startswith("vigil.toml: not valid TOML: ")


def test_load_names_the_file_and_refuses_what_it_cannot_read(tmp_path):
    p = tmp_path / "vigil.toml"
    p.write_text(MINIMAL + '[timings]\ntick_s = "fast"\n')
    with pytest.raises(ConfigError, match=re.escape(f'{p}: timings.tick_s: must be a positive number, got "fast"')):
        AgentConfig.load(p)
    with pytest.raises(SpecError, match="cannot read agent config"):
        AgentConfig.load(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(SpecError, match="cannot read agent config"):
        AgentConfig.load(tmp_path / "bin.toml")


def test_the_old_json_file_still_loads(tmp_path):
    p = tmp_path / "agent.json"
    p.write_text('{"host": "h1", "address": "10.0.0.1", "etcd_endpoints": ["10.0.0.1:2379"], '
                 '"run_dir": "/run/v", "datastores": {"ds1": "/mnt/ds1"}, "watchdog_s": 7}')
    cfg = AgentConfig.load(p)
    assert cfg.etcd_endpoints == ("10.0.0.1:2379",) and cfg.datastores == {"ds1": "/mnt/ds1"} and cfg.watchdog_s == 7


def test_write_then_load(tmp_path):
    cfg = AgentConfig(host="host1", address="10.0.0.1", etcd_endpoints=("10.0.0.1:2379", "10.0.0.2:2379"),
                      run_dir="/run/vigil", datastores={"ds1": "/mnt/ds1"}, watchdog_file="/run/wd",
                      peers={"host2": "10.0.0.2"}, networks={"vmnet": "vmbr0"}, lease_ttl=4, tick_s=0.25)
    cfg.write(tmp_path / "vigil.toml")
    assert AgentConfig.load(tmp_path / "vigil.toml") == cfg
    assert "[timings]\nlease_ttl = 4\ntick_s = 0.25\n" in (tmp_path / "vigil.toml").read_text()
    assert "hb_grace_s" not in (tmp_path / "vigil.toml").read_text()  # defaults are left out
    with pytest.raises(ConfigError, match="paths.run_dir: must be an absolute path"):
        dataclasses.replace(cfg, run_dir="run").write(tmp_path / "bad.toml")
    assert not (tmp_path / "bad.toml").exists()


# --- any valid config round-trips through the writer and the reader -----------------------

names = st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,12}\Z")
ipv4 = st.ip_addresses(v=4).map(str)
ips = st.one_of(ipv4, st.ip_addresses(v=6).map(str))
paths = st.lists(st.text(st.characters(blacklist_characters="/\0"), min_size=1, max_size=8),
                 min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
opt_paths = st.one_of(st.just(""), paths)
host_ports = st.tuples(st.one_of(ipv4, st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
                                 st.from_regex(r"\A[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z]([a-z0-9-]{0,8}[a-z0-9])?)?\Z")),
                       st.integers(1, 65535)).map(lambda hp: f"{hp[0]}:{hp[1]}")
seconds = st.floats(0.001, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def configs(draw) -> AgentConfig:
    host = draw(names)
    tick = draw(seconds.filter(lambda s: s < 1e5))
    certs = draw(st.sampled_from([("", ""), ("/etc/vigil/c.pem", "/etc/vigil/k.pem")]))
    watchdog = draw(st.sampled_from(["device", "file", ""]))
    fencing = draw(st.booleans())
    return AgentConfig(
        host=host, address=draw(ips),
        etcd_endpoints=tuple(draw(st.lists(host_ports, min_size=1, max_size=3, unique=True))),
        run_dir=draw(paths), datastores=draw(st.dictionaries(names, paths, max_size=3)),
        watchdog_file=draw(paths) if watchdog == "file" else "",
        watchdog_device=draw(paths) if watchdog == "device" else "",
        isolation_addresses=tuple(draw(st.lists(ips, max_size=3, unique=True))),
        peers=draw(st.dictionaries(names.filter(lambda n: n != host), ips, max_size=3)),
        memory_mb=draw(st.integers(1, 1 << 40)), cpus=draw(st.integers(1, 4096)),
        lease_ttl=draw(st.integers(int(tick) + 1, int(tick) + 1000)), tick_s=tick,
        hb_grace_s=draw(seconds), watchdog_s=draw(seconds), guest_hb_timeout_s=draw(seconds),
        qemu_binary=draw(st.text(min_size=1, max_size=20)), tls_dir=draw(opt_paths),
        networks=draw(st.dictionaries(names, st.from_regex(r"\A[A-Za-z0-9_.-]{1,15}\Z"), max_size=2)),
        cache_dir=draw(opt_paths), metrics_listen=draw(st.one_of(st.just(""), host_ports)),
        etcd_ca=certs[0], etcd_cert=certs[0], etcd_key=certs[1],
        api_listen=draw(st.one_of(st.just(""), host_ports)), api_cert=certs[0], api_key=certs[1],
        fencing_kind=draw(st.sampled_from(["redfish", "ipmi"])) if fencing else "",
        fencing_address=draw(st.one_of(ipv4, st.just("bmc1.example"))) if fencing else "",
        fencing_user=draw(st.text(min_size=1, max_size=10)) if fencing else "",
        fencing_password_file=draw(paths) if fencing else "",
    )


@settings(max_examples=150, deadline=None)
@given(configs())
def test_any_valid_config_round_trips(cfg):
    assert AgentConfig(**parse_toml(cfg.to_toml())) == cfg


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_read_or_refused_with_a_config_error(text):
    try:
        AgentConfig(**parse_toml(text))
    except ConfigError as e:
        assert e.problems and all(p.startswith("vigil.toml: ") for p in e.problems)


# --- the CLI -------------------------------------------------------------------------------

runner = CliRunner()


def test_config_check_says_ok_or_lists_the_problems(tmp_path):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(MINIMAL)
    bad.write_text(MINIMAL.replace('"10.0.0.1"', '"nowhere"') + '[timings]\ntick_s = "fast"\n')
    r = runner.invoke(app, ["config", "check", str(good)])
    assert r.exit_code == 0 and r.output.strip() == "ok"
    r = runner.invoke(app, ["config", "check", str(bad)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f'{bad}: host.address: must be an IP address, got "nowhere"' in r.output
    assert f'{bad}: timings.tick_s: must be a positive number, got "fast"' in r.output
    r = runner.invoke(app, ["config", "check", str(tmp_path / "missing.toml")])
    assert r.exit_code == 1 and "cannot read agent config" in r.output
    assert config_problems(good) == []


def test_the_agent_refuses_a_bad_file_before_starting(tmp_path, monkeypatch):
    import vigil.agent.agent as agent_mod

    monkeypatch.setattr(agent_mod, "main", lambda path: pytest.fail("the agent started"))
    bad = tmp_path / "vigil.toml"
    bad.write_text(MINIMAL + "[timings]\ntick_s = -1\n")
    r = runner.invoke(app, ["agent", "--config", str(bad)])
    assert r.exit_code == 1 and (r.exception is None or isinstance(r.exception, SystemExit))
    assert "timings.tick_s: must be a positive number, got -1" in r.output and "Traceback" not in r.output


# --- docs/config.md lists every key --------------------------------------------------------

def test_the_reference_lists_every_key_the_reader_knows():
    doc = FULL.read_text()
    parts = re.split(r"^## ", doc, flags=re.M)
    by_section = {p.split("\n", 1)[0].strip(): p for p in parts[1:]}
    for section, spec in SECTIONS.items():
        head = f"`[{section}]`"
        assert head in by_section, f"docs/config.md has no '## {head}' section"
        if isinstance(spec, Table):
            continue
        for k in spec:
            assert re.search(rf"^\| `{k.key}` \|", by_section[head], re.M), \
                f"docs/config.md: [{section}] does not describe `{k.key}`"
