"""The shared labs' bookkeeping (labpool), without a lab: which modules run together, and
that there is never more than one lab, torn down before a lab of another config."""
from __future__ import annotations

import types

import pytest

import labpool
from labpool import SessionLabs, config_of, grouped, shared_lab

A = {"hosts": 3, "datastores": 1}
B = {"hosts": 3, "datastores": 2}


def module(name: str, config: dict | None = None, fresh_after: bool = False) -> types.ModuleType:
    m = types.ModuleType(name)
    if config is not None:
        m.lab_pool, m.lab = shared_lab(fresh_after=fresh_after, **config)
    return m


def item(m: types.ModuleType, name: str, uses_lab: bool = True) -> types.SimpleNamespace:
    return types.SimpleNamespace(module=m, name=f"{m.__name__}::{name}",
                                 fixturenames=["lab", "request"] if uses_lab else ["tmp_path"])


def names(items) -> list[str]:
    return [i.name for i in items]


def test_modules_of_one_config_run_together_where_the_first_was_and_the_others_keep_their_places() -> None:
    a1, unit, b1, a2, own, b2 = (module("a1", A), module("unit"), module("b1", B), module("a2", A),
                                 module("own"), module("b2", B, fresh_after=True))
    items = [item(a1, "t1"), item(a1, "t2"), item(unit, "u", uses_lab=False), item(b1, "t"), item(a2, "t"),
             item(own, "t"), item(b2, "t1"), item(b2, "t2")]
    assert names(grouped(items)) == ["a1::t1", "a1::t2", "a2::t", "unit::u", "b2::t1", "b2::t2", "b1::t", "own::t"]
    assert config_of(items[0]) == A and config_of(items[2]) is None and config_of(items[5]) is None


def test_a_test_that_does_not_ask_for_the_lab_shares_none() -> None:
    m = module("a", A)
    assert config_of(item(m, "t", uses_lab=False)) is None


def test_one_lab_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = []
    monkeypatch.setattr(labpool.LabPool, "close", lambda self: closed.append(self.config))
    s = SessionLabs()
    p = s.pool_for(A)
    assert s.pool_for(A) is p and closed == []
    s.keep_only(A)
    assert s.pool is p and closed == []
    q = s.pool_for(B)  # another config: A's lab goes first
    assert closed == [A] and q is not p and q.config == B
    s.keep_only(None)  # the next test shares no lab
    assert closed == [A, B] and s.pool is None
    s.close()
    assert closed == [A, B]


def test_a_lab_no_next_test_shares_is_not_healed(monkeypatch: pytest.MonkeyPatch) -> None:
    healed, closed = [], []
    monkeypatch.setattr(labpool.LabPool, "_up", lambda self: setattr(self, "lab", "the lab") or self.lab)
    monkeypatch.setattr(labpool.LabPool, "_heal", lambda self: healed.append(1) or True)
    monkeypatch.setattr(labpool.LabPool, "close", lambda self: closed.append(1) or setattr(self, "lab", None))
    s = SessionLabs()
    pool = s.pool_for(A)
    for next_config, heals, closes in ((..., 1, 0), (A, 2, 0), (B, 2, 1), (None, 2, 2)):
        s.next_config = next_config
        with pool.use(lambda: True, lambda: s.shared_next(A)) as lab:
            assert lab == "the lab"
        assert (len(healed), len(closed)) == (heals, closes), next_config
