"""Schemathesis against the live API's own OpenAPI document (a real `vigil api` over a real
etcd, tests/integration/apirig.py), as an admin and with no credentials: no 5xx, no
response outside its documented status codes, content types, headers and schemas, and
(as admin) invalid data always refused. Bounded in time; the run's figures are printed."""
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


def schemathesis(rig: Rig, tmp: str, seconds: int, *extra: str, checks: str = CHECKS) -> tuple[int, str]:
    exe = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    argv = [exe, "run", f"{rig.url}/api/v1/openapi.json", "--tls-verify", rig.ca, "--checks", checks,
            "--exclude-path", "/api/v1/stream",  # an endless response by design; tested in test_api
            "--max-examples", "30", "--max-time", str(seconds), "--workers", "2", "--no-color", "--seed", "1",
            "--generation-database", "none", *extra]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 240, cwd=tmp)
    print(r.stdout[-3000:])
    return r.returncode, r.stdout


def generated(out: str) -> int:
    m = re.search(r"(\d+) generated", out)
    return int(m.group(1)) if m else 0


def test_fuzzing_as_admin(rig: Rig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rc, out = schemathesis(rig, str(tmp_path), 60, "--header", f"Authorization: Bearer {rig.tokens['admin']}",
                           checks=CHECKS + ",negative_data_rejection")
    assert rc == 0, out[-3000:]
    assert generated(out) >= 2000, out[-500:]


def test_fuzzing_without_credentials(rig: Rig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rc, out = schemathesis(rig, str(tmp_path), 20)
    assert rc == 0, out[-3000:]
    assert generated(out) >= 500, out[-500:]
