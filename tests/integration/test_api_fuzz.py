"""Schemathesis against the live API's own OpenAPI document (a real `vigil api` over a real
etcd, tests/integration/apirig.py), as an admin and with no credentials: no 5xx, no
response outside its documented status codes, content types, headers and schemas, and
(as admin) invalid data always refused. Bounded in cases, not time (seed 1), so that a run
on a busy machine fuzzes as much as one on an idle one: 30 per operation and phase as admin,
10 without credentials, where every operation but the public few is refused before its
input is read; the run's figures are printed."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Iterator

import pytest

from apirig import Rig, api_rig

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,response_headers_conformance")


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with api_rig() as r:
        yield r


def schemathesis(rig: Rig, tmp: str, *extra: str, checks: str = CHECKS, examples: int = 30) -> tuple[int, str]:
    exe = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    argv = [exe, "run", f"{rig.url}/api/v1/openapi.json", "--tls-verify", rig.ca, "--checks", checks,
            "--exclude-path", "/api/v1/stream",  # an endless response by design; tested in test_api
            "--max-examples", str(examples), "--workers", "2", "--no-color", "--seed", "1",
            "--generation-database", "none", *extra]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=540, cwd=tmp)
    print(r.stdout[-3000:])
    return r.returncode, r.stdout


def generated(out: str) -> int:
    m = re.search(r"(\d+) generated", out)
    return int(m.group(1)) if m else 0


def test_fuzzing_as_admin(rig: Rig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rc, out = schemathesis(rig, str(tmp_path), "--header", f"Authorization: Bearer {rig.tokens['admin']}",
                           checks=CHECKS + ",negative_data_rejection")
    assert rc == 0, out[-3000:]
    assert generated(out) >= 3000, out[-500:]


def test_fuzzing_without_credentials(rig: Rig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rc, out = schemathesis(rig, str(tmp_path), examples=10)
    assert rc == 0, out[-3000:]
    assert generated(out) >= 1000, out[-500:]
