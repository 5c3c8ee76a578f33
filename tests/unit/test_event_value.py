"""An event as stored is what ``dataclasses.asdict`` gives, with or without plain data."""
from __future__ import annotations

from dataclasses import asdict

import pytest

from vigil.model import Event
from vigil.store.events import event_value


@pytest.mark.parametrize("data", [{}, {"gen": 2, "why": "x", "ratio": 0.5, "ok": True, "none": None},
                                  {"hosts": ["h1", "h2"], "nested": {"a": [1, {"b": 2}]}}])
def test_event_value_is_asdict(data):
    e = Event(time=1.5, kind="vm-restart", message="m", host="h1", vm="a", source="controller", data=data, user="u")
    got = event_value(e)
    assert got == asdict(e) and list(got) == list(asdict(e))
    assert got["data"] is not e.data  # a copy: the stored value never aliases the event's
