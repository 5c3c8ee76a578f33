"""apt's answer for the guest kernel is kept while apt's inputs are unchanged."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from vigil.hypervisor import kernel_package as kp

DEPENDS = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-9-cloud-amd64\n"
POLICY = "linux-image-6.1.0-9-cloud-amd64:\n  Installed: (none)\n  Candidate: 6.1.27-1\n"


@pytest.fixture
def apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "main_Packages").write_text("a")
    (lists / "lock").write_text("")
    monkeypatch.setattr(kp, "APT_INPUTS", (lists, tmp_path / "status"))
    return lists


def counting_apt(calls: list[list[str]]):  # type: ignore[no-untyped-def]
    def run(argv: list[str]) -> str:
        calls.append(argv)
        return DEPENDS if argv[1] == "depends" else POLICY
    return run


def test_the_answer_is_kept_until_a_list_changes(apt: Path, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    run = counting_apt(calls)
    cache = tmp_path / "cache"
    cache.mkdir()
    assert kp.resolve(cache, run) == ("linux-image-6.1.0-9-cloud-amd64", "6.1.27-1")
    assert len(calls) == 2
    assert kp.resolve(cache, run) == ("linux-image-6.1.0-9-cloud-amd64", "6.1.27-1")
    assert len(calls) == 2  # from the cache
    (apt / "lock").write_text("held")  # apt's lock file is no input
    kp.resolve(cache, run)
    assert len(calls) == 2
    st = (apt / "main_Packages").stat()
    os.utime(apt / "main_Packages", ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # an apt-get update
    kp.resolve(cache, run)
    assert len(calls) == 4
    (tmp_path / "status").write_text("installed")  # dpkg installed something
    kp.resolve(cache, run)
    assert len(calls) == 6


def test_an_unreadable_or_foreign_cache_asks_apt(apt: Path, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    (tmp_path / kp.ANSWER_FILE).write_text("{not json")
    assert kp.resolve(tmp_path, counting_apt(calls))[0] == "linux-image-6.1.0-9-cloud-amd64"
    assert len(calls) == 2


def test_no_kernel_package_is_a_lookup_error(apt: Path, tmp_path: Path) -> None:
    with pytest.raises(LookupError):
        kp.resolve(tmp_path, lambda argv: "nothing\n")
