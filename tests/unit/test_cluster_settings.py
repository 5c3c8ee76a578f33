"""service.cluster_settings on the simulator's store: the five policies read with their
defaults, replaced whole through each one's own validation, and a refusal writes nothing."""
from __future__ import annotations

import pytest

from vigil.service import Invalid, NotFound
from vigil.service import cluster_settings as S
from vigil.sim.store import MemoryStore
from vigil.store import keys as K


def snapshot(store: MemoryStore) -> dict:
    return {k: e.value for k, e in store._kv.items() if k.startswith(K.SETTINGS)}


async def test_defaults_then_each_replaced_and_read_back() -> None:
    store = MemoryStore(now=lambda: 0.0)
    got = await S.all_policies(store)
    assert [s["name"] for s in got] == list(S.NAMES)
    assert all(s["revision"] == 0 and s["stored"] == {} for s in got)
    for name, body, field, want in (("admission", {"policy": "slots", "failures": 2}, "failures", 2),
                                    ("retries", {"delays": [5]}, "delays", [5.0]),
                                    ("monitoring", {"preset": "low"}, "interval_s", 120.0),
                                    ("orchestration", {"ready": "app"}, "ready", "app"),
                                    ("drs", {"mode": "automatic"}, "mode", "automatic")):
        out = await S.set_policy(store, name, body)
        assert out["value"][field] == want and out["revision"] > 0, out
        assert await S.get_policy(store, name) == out
    # drs is replaced whole: a field not given again takes its default
    await S.set_policy(store, "drs", {"mode": "manual", "threshold": 5})
    assert (await S.set_policy(store, "drs", {"mode": "manual"}))["value"]["threshold"] == 3


@pytest.mark.parametrize("name, body", [("admission", {"policy": "sometimes"}), ("retries", {"delays": []}),
                                        ("monitoring", {"preset": "fast"}), ("orchestration", {"delay_s": -1}),
                                        ("drs", {"threshold": 0})])
async def test_a_refused_value_writes_nothing(name: str, body: dict) -> None:
    store = MemoryStore(now=lambda: 0.0)
    before = snapshot(store)
    with pytest.raises(Invalid):
        await S.set_policy(store, name, body)
    assert snapshot(store) == before


async def test_an_unknown_name_is_not_found() -> None:
    with pytest.raises(NotFound):
        await S.get_policy(MemoryStore(now=lambda: 0.0), "nope")
