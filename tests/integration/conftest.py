"""Fixtures of the QEMU-level tests (QEMUs outside the lab, vigil.lab.standalone): the lab
guest image and this machine's accelerator, made once per session, and a rig to start QEMUs.
The hooks of the shared labs (labpool): modules of one lab config run one after the other,
and the lab goes as soon as the next test does not share it (one lab on the machine)."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import labpool

from vigil.hypervisor.guest_image import GuestImage, build_guest_image
from vigil.lab.standalone import Standalone, probe_accel, standalone


@pytest.fixture(scope="session")
def image() -> GuestImage:
    return build_guest_image(progress=lambda m: print(m))


@pytest.fixture(scope="session")
def accel(image: GuestImage) -> str:
    a = probe_accel(image)
    assert a in ("kvm", "tcg")
    return a


@pytest.fixture
async def rig(tmp_path: Path, image: GuestImage, accel: str) -> AsyncIterator[Standalone]:
    """Datastores ds1 and ds2 under tmp_path; every QEMU a test starts is killed at the end."""
    async with standalone(image, accel, root=tmp_path, datastores=("ds1", "ds2")) as r:
        yield r


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    """Each phase's report on the test item (``item.rep_call``...): a shared lab
    (labpool.LabPool) is reused only after a test that passed."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep



def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules whose tests share a lab of one config run one after the other."""
    items[:] = labpool.grouped(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    """Once the test's fixtures are gone: the shared lab goes too unless the next test
    shares it (a lab of another config, a lab of a test's own, or no lab at all come next);
    a lab no next test shares is not healed first."""
    session = labpool.SESSION
    session.next_config = labpool.config_of(nextitem) if nextitem is not None else None
    try:
        return (yield)
    finally:  # a fixture's teardown that failed too
        session.keep_only(session.next_config)
        session.next_config = ...


@pytest.fixture(scope="session", autouse=True)
def _one_shared_lab() -> Iterator[None]:
    """The shared lab torn down at the end of the session, however it ends."""
    yield
    labpool.SESSION.close()
