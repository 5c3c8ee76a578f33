"""Shared helpers of the lab tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Callable


def vigil_cmd() -> list[str]:
    """The ``vigil`` of this virtual environment."""
    return [shutil.which("vigil") or os.path.join(os.path.dirname(sys.executable), "vigil")]


def assert_refused(bad: list[tuple[list[str], str]], desired: Callable[[], dict]) -> None:
    """Each command fails with exit 1 and its message, no traceback, and ``desired()``
    (the etcd state it must not touch) is the same afterwards."""
    before = desired()
    for argv, message in bad:
        r = subprocess.run(vigil_cmd() + argv, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, (argv, r.stdout, r.stderr)
        assert message in r.stderr.replace("\n", " "), (argv, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout
    assert desired() == before
