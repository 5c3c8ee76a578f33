"""vigil.toml: its sections and keys, the reader (``tomllib``, every problem collected) and
the writer (by hand: the format is flat — strings, numbers, lists of strings, tables of
strings — so no TOML-writing library is needed; a property test reads back what it writes).

The reader returns the AgentConfig fields as a dict, so this module does not import the
config class (vigil/config/__init__.py builds it); a unit test checks the two agree.
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from typing import Any

import vigil.config.checks as C
from vigil.model import SpecError

REQUIRED: Any = object()


@dataclass(frozen=True)
class Key:
    """One key of a section: the AgentConfig field it fills, its check, its default."""
    key: str
    field: str
    check: C.Check
    default: Any = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Table:
    """A section of free names (datastores, networks, peers) -> one kind of value."""
    field: str
    check: C.Check


SECTIONS: dict[str, tuple[Key, ...] | Table] = {
    "host": (Key("name", "host", C.name, REQUIRED), Key("address", "address", C.ip, REQUIRED),
             Key("memory_mb", "memory_mb", C.positive_int, 2048), Key("cpus", "cpus", C.positive_int, 2),
             Key("qemu_binary", "qemu_binary", C.string, "qemu-system-x86_64")),
    "etcd": (Key("endpoints", "etcd_endpoints", C.list_of(C.host_port, non_empty=True), REQUIRED),
             Key("ca", "etcd_ca", C.abs_path), Key("cert", "etcd_cert", C.abs_path),
             Key("key", "etcd_key", C.abs_path), Key("server_name", "etcd_server_name", C.host_or_ip)),
    "api": (Key("listen", "api_listen", C.host_port), Key("cert", "api_cert", C.abs_path),
            Key("key", "api_key", C.abs_path)),
    "datastores": Table("datastores", C.abs_path),
    "networks": Table("networks", C.bridge),
    "isolation": (Key("addresses", "isolation_addresses", C.list_of(C.ip), ()),),
    "peers": Table("peers", C.ip),
    "watchdog": (Key("device", "watchdog_device", C.abs_path), Key("file", "watchdog_file", C.abs_path),
                 Key("timeout_s", "watchdog_s", C.positive_number, 5.0)),
    "fencing": (Key("kind", "fencing_kind", C.one_of("redfish", "ipmi")),
                Key("address", "fencing_address", C.host_or_ip), Key("user", "fencing_user", C.string),
                Key("password_file", "fencing_password_file", C.abs_path),
                Key("port", "fencing_port", C.port, 0), Key("ca", "fencing_ca", C.abs_path),
                Key("timeout_s", "fencing_timeout_s", C.positive_number, 5.0),
                Key("hung_after_s", "fencing_hung_after_s", C.non_negative_number, 1.5)),
    "timings": (Key("lease_ttl", "lease_ttl", C.positive_int, 3), Key("tick_s", "tick_s", C.positive_number, 0.5),
                Key("hb_grace_s", "hb_grace_s", C.positive_number, 2.5),
                Key("guest_hb_timeout_s", "guest_hb_timeout_s", C.positive_number, 5.0)),
    "paths": (Key("run_dir", "run_dir", C.abs_path, REQUIRED), Key("cache_dir", "cache_dir", C.abs_path),
              Key("tls_dir", "tls_dir", C.abs_path)),
    "metrics": (Key("listen", "metrics_listen", C.host_port),),
}

FENCING_REQUIRED = ("kind", "address", "user", "password_file")  # when [fencing] is given

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class ConfigError(SpecError):
    """A config file vigil refuses: ``problems`` holds one line per problem, each
    ``FILE: section.key: what is wrong``; the message is those lines."""

    def __init__(self, label: str, problems: list[str]) -> None:
        self.problems = [f"{label}: {p}" for p in problems]
        super().__init__("\n".join(self.problems))


def defaults() -> dict[str, Any]:
    """Every AgentConfig field vigil.toml fills, at its default (REQUIRED where none)."""
    out: dict[str, Any] = {}
    for spec in SECTIONS.values():
        if isinstance(spec, Table):
            out[spec.field] = {}
        else:
            out.update({k.field: k.default for k in spec})
    return out


def dotted(section: str, key: str) -> str:
    return f"{section}.{key}" if _BARE_KEY.match(key) else f"{section}.{json.dumps(key)}"


def parse_toml(text: str, label: str = "vigil.toml") -> dict[str, Any]:
    """vigil.toml text -> AgentConfig fields; raises ConfigError listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(label, [f"not valid TOML: {e}"]) from None
    out, problems, bad = defaults(), [], set()
    for section, body in data.items():
        spec = SECTIONS.get(section)
        if spec is None:
            problems.append(f"{json.dumps(section) if not _BARE_KEY.match(section) else section}: "
                            f"unknown section (known: {', '.join(SECTIONS)})")
        elif not isinstance(body, dict):
            problems.append(f"{section}: must be a table ([{section}]), got {C.show(body)}")
            bad.update(_fields(spec))
        elif isinstance(spec, Table):
            out[spec.field] = _table(section, spec, body, problems, bad)
        else:
            _section(section, spec, body, out, problems, bad)
    for section, spec in SECTIONS.items():
        if not isinstance(spec, Table):
            for k in spec:
                if k.required and out[k.field] is REQUIRED and k.field not in bad:
                    problems.append(f"{section}.{k.key}: required")
                    bad.add(k.field)
    problems += _across(out, bad, data)
    if problems:
        raise ConfigError(label, problems)
    return out


def _fields(spec: tuple[Key, ...] | Table) -> set[str]:
    return {spec.field} if isinstance(spec, Table) else {k.field for k in spec}


def _section(section: str, spec: tuple[Key, ...], body: dict, out: dict, problems: list[str],
             bad: set[str]) -> None:
    keys = {k.key: k for k in spec}
    for key, value in body.items():
        k = keys.get(key)
        if k is None:
            problems.append(f"{dotted(section, key)}: unknown key (known: {', '.join(keys)})")
            continue
        try:
            out[k.field] = k.check(value)
        except C.Bad as e:
            problems.append(f"{section}.{key}: {e}")
            bad.add(k.field)


def _table(section: str, spec: Table, body: dict, problems: list[str], bad: set[str]) -> dict[str, str]:
    table: dict[str, str] = {}
    for key, value in body.items():
        try:
            if not C.NAME_RE.match(key):
                raise C.Bad("is not a valid name (lowercase letters, digits, '.', '_', '-'; at most 63)")
            table[key] = spec.check(value)
        except C.Bad as e:
            problems.append(f"{dotted(section, key)}: {e}")
            bad.add(spec.field)
    return table


def _across(v: dict[str, Any], bad: set[str], data: dict) -> list[str]:
    """Checks between keys, made only when the keys they read are good."""
    out: list[str] = []

    def good(*fields: str) -> bool:
        return not bad.intersection(fields)

    if good("lease_ttl", "tick_s") and not v["lease_ttl"] > v["tick_s"]:
        out.append(f"timings.lease_ttl: must be greater than timings.tick_s ({C.show(v['tick_s'])}), "
                   f"got {C.show(v['lease_ttl'])}")
    if good("watchdog_device", "watchdog_file") and v["watchdog_device"] and v["watchdog_file"]:
        out.append("watchdog: give device or file, not both")
    for section in ("etcd", "api"):
        cert, key = v[f"{section}_cert"], v[f"{section}_key"]
        if good(f"{section}_cert", f"{section}_key") and bool(cert) != bool(key):
            out.append(f"{section}.{'key' if cert else 'cert'}: required with {section}."
                       f"{'cert' if cert else 'key'}")
    if good("etcd_ca", "etcd_cert", "etcd_key") and v["etcd_cert"] and v["etcd_key"] and not v["etcd_ca"]:
        out.append("etcd.ca: required with etcd.cert (the CA that signed the etcd members)")
    if isinstance(data.get("fencing"), dict):
        for k in SECTIONS["fencing"]:
            if k.key in FENCING_REQUIRED and not v[k.field] and k.field not in bad:
                out.append(f"fencing.{k.key}: required when [fencing] is given")
    if good("host", "peers") and v["host"] in v["peers"]:
        out.append(f"{dotted('peers', v['host'])}: is this host (host.name); list the other hosts")
    return out


def render_toml(values: dict[str, Any]) -> str:
    """AgentConfig fields -> vigil.toml text; keys at their default are left out."""
    lines = ["# vigil host configuration; docs/config.md describes every key"]
    for section, spec in SECTIONS.items():
        if isinstance(spec, Table):
            body = [f"{_key(k)} = {_value(x)}" for k, x in values[spec.field].items()]
        else:
            body = [f"{k.key} = {_value(values[k.field])}" for k in spec
                    if k.required or values[k.field] != k.default]
        if body:
            lines += ["", f"[{section}]", *body]
    return "\n".join(lines) + "\n"


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else _value(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        raise TypeError("vigil.toml has no true/false keys")
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"vigil.toml cannot hold {type(v).__name__}")
