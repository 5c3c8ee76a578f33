"""vigil.hypervisor.dhparams: the DH parameters written into a TLS dir are RFC 7919's
ffdhe2048, and an operator's own are kept."""
from __future__ import annotations

import base64
import os
from decimal import Decimal, getcontext
from pathlib import Path

import pytest

from vigil.hypervisor import dhparams as D


def _der_integers(pem: str) -> list[int]:
    """The INTEGERs of a PKCS#3 DHParameter (a SEQUENCE of p, g)."""
    der = base64.b64decode("".join(line for line in pem.splitlines() if not line.startswith("-----")))

    def length(i: int) -> tuple[int, int]:
        n = der[i]
        if n < 0x80:
            return n, i + 1
        k = n & 0x7F
        return int.from_bytes(der[i + 1:i + 1 + k], "big"), i + 1 + k

    assert der[0] == 0x30
    total, i = length(1)
    assert i + total == len(der)
    out = []
    while i < len(der):
        assert der[i] == 0x02
        n, i = length(i + 1)
        out.append(int.from_bytes(der[i:i + n], "big"))
        i += n
    return out


def test_the_parameters_are_rfc7919_ffdhe2048() -> None:
    getcontext().prec = 800
    e = Decimal(1).exp()
    p = 2**2048 - 2**1984 + (int(Decimal(2**1918) * e) + 560316) * 2**64 - 1  # RFC 7919, A.1
    assert _der_integers(D.FFDHE2048_PEM) == [p, 2]


def test_written_once_and_an_operators_own_kept(tmp_path: Path) -> None:
    assert D.ensure_dh_params(tmp_path)
    path = tmp_path / D.DH_PARAMS
    assert path.read_text() == D.FFDHE2048_PEM and oct(path.stat().st_mode & 0o777) == "0o644"
    path.write_text("the operator's own\n")
    assert D.ensure_dh_params(tmp_path)
    assert path.read_text() == "the operator's own\n"
    assert sorted(os.listdir(tmp_path)) == [D.DH_PARAMS]  # no temporary file left


def test_a_dir_it_cannot_write_is_said_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "no-such-dir"
    assert D.ensure_dh_params(missing) is False
    assert D.ensure_dh_params(missing) is False
    assert sum("cannot write" in r.message for r in caplog.records) == 1
