"""One check per kind of value in vigil.toml: each returns the value in its in-memory form
or raises Bad with the reason, worded to follow ``section.key: ``."""
from __future__ import annotations

import ipaddress
import json
import math
import re
from pathlib import PurePosixPath
from typing import Any, Callable

from vigil.model import NAME_RE

Check = Callable[[Any], Any]

_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class Bad(ValueError):
    """A value vigil refuses; the message says what was wanted and what it got."""


def show(v: Any) -> str:
    """A value as it reads in TOML, for messages: strings quoted, true/false, lists."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "[" + ", ".join(show(x) for x in v) + "]"
    return str(v)


def _want(what: str, v: Any) -> Bad:
    return Bad(f"must be {what}, got {show(v)}")


def string(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise _want("a non-empty string", v)
    return v


def name(v: Any) -> str:
    if not isinstance(v, str) or not NAME_RE.match(v):
        raise _want("a name (lowercase letters, digits, '.', '_', '-'; at most 63)", v)
    return v


def positive_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise _want("a positive whole number", v)
    return v


def port(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536:
        raise _want("a port number (1 to 65535)", v)
    return v


def positive_number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise _want("a positive number", v)
    return float(v)


def non_negative_number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise _want("a number, 0 or more", v)
    return float(v)


def ip(v: Any) -> str:
    if isinstance(v, str) and _is_ip(v):
        return v
    raise _want("an IP address", v)


def abs_path(v: Any) -> str:
    if not isinstance(v, str) or not PurePosixPath(v).is_absolute() or "\0" in v:
        raise _want("an absolute path", v)
    return v


def bridge(v: Any) -> str:
    if not isinstance(v, str) or not _IFNAME_RE.match(v):
        raise _want("a bridge name (at most 15 letters, digits, '.', '_', '-')", v)
    return v


def host_or_ip(v: Any) -> str:
    if isinstance(v, str) and (_is_ip(v) or _HOSTNAME_RE.match(v)):
        return v
    raise _want("a host name or IP address", v)


def _is_ip(v: str) -> bool:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def host_port(v: Any) -> str:
    """HOST:PORT, HOST a name or an IPv4 address, or [IPv6]:PORT; PORT 1..65535."""
    if isinstance(v, str):
        host, sep, port = v.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            ok_host = ":" in host and _is_ip(host[1:-1])
        else:
            ok_host = ":" not in host and (_is_ip(host) or bool(_HOSTNAME_RE.match(host)))
        if sep and ok_host and port.isascii() and port.isdigit() and 0 < int(port) < 65536:
            return v
    raise _want("HOST:PORT", v)


def one_of(*choices: str) -> Check:
    def check(v: Any) -> str:
        if v not in choices:
            raise _want(" or ".join(f'"{c}"' for c in choices), v)
        return v
    return check


def list_of(item: Check, *, non_empty: bool = False) -> Check:
    """A list whose items each pass ``item``; a bad item is named by its index."""
    def check(v: Any) -> tuple:
        if not isinstance(v, list):
            raise _want("a list", v)
        if non_empty and not v:
            raise Bad("must list at least one")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except Bad as e:
                raise Bad(f"item {i + 1}: {e}") from None
        if len(set(out)) != len(out):
            raise Bad(f"lists the same value twice: {show(v)}")
        return tuple(out)
    return check
