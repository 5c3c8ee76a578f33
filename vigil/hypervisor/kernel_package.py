"""Which Debian cloud kernel the guest image is built from, remembered while apt's inputs stay
the same.

Asking apt (``apt-cache depends`` then ``apt-cache policy``) costs seconds where apt keeps no
binary cache (``Dir::Cache::pkgcache ""``, as in container images): apt parses every package
list each time. The image is checked at every `lab up` and every lab VM created, so the
answer is kept in the guest cache with a fingerprint of what apt reads (the package lists,
its configuration and dpkg's status: names, sizes, modification times). Any change there,
an `apt-get update` that brought new lists included, asks apt again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
ANSWER_FILE = "kernel-package.json"
# What apt-cache's answers depend on.
APT_INPUTS = (Path("/var/lib/apt/lists"), Path("/etc/apt"), Path("/var/lib/dpkg/status"))


def apt_fingerprint(inputs: tuple[Path, ...] | None = None) -> str:
    """A digest of the names, sizes and modification times of apt's inputs."""
    h = hashlib.sha256()
    for top in APT_INPUTS if inputs is None else inputs:
        paths = [top] if not top.is_dir() else sorted(p for p in top.rglob("*") if p.name not in ("lock", "partial"))
        for p in paths:
            with contextlib.suppress(OSError):
                st = p.stat()
                h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def ask_apt(run: Callable[[list[str]], str]) -> tuple[str, str]:
    """(package, version) of the real kernel package behind the cloud meta package."""
    out = run(["apt-cache", "depends", KERNEL_META_PACKAGE])
    m = re.search(r"Depends:\s*(linux-image-\S+-cloud-amd64)", out)
    if not m:
        raise LookupError(f"apt-cache depends {KERNEL_META_PACKAGE}: no kernel package in {out!r}")
    pkg = m.group(1)
    out = run(["apt-cache", "policy", pkg])
    v = re.search(r"Candidate:\s*(\S+)", out)
    version = v.group(1) if v and v.group(1) != "(none)" else "unknown"
    return pkg, version


def resolve(cache_dir: Path, run: Callable[[list[str]], str]) -> tuple[str, str]:
    """apt's answer, from ``cache_dir`` when apt's inputs are unchanged since it was given.
    The caller holds the guest cache's lock."""
    answer = Path(cache_dir) / ANSWER_FILE
    fp = apt_fingerprint()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        kept = json.loads(answer.read_text())
        if kept["fingerprint"] == fp:
            return str(kept["package"]), str(kept["version"])
    pkg, version = ask_apt(run)
    with contextlib.suppress(OSError):
        tmp = answer.with_name(answer.name + ".tmp")
        tmp.write_text(json.dumps({"fingerprint": fp, "package": pkg, "version": version}))
        os.replace(tmp, answer)
    return pkg, version

