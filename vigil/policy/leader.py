"""Whether the leader is dead, by the controller's own host classification.

An agent that finds the leader key held by a host that is silent on every datastore and
answers no ping revokes that lease at once instead of waiting it out. It asks exactly
what the controller asks of any host (vigil.policy.hoststate.classify_host): the
leader's lease is alive (its key exists), so only "failed" (silent heartbeat, no ping)
lets the key go.
"""
from __future__ import annotations

from vigil.model import HostState
from vigil.policy.hoststate import classify_host
from vigil.policy.view import HostView, Timing


def leader_failed(leader: str, hb_age: float | None, ping: bool | None, hb_grace: float) -> tuple[bool, str]:
    """``hb_age``: how long its datastore heartbeat has not advanced (None: no datastore
    readable here, so its silence means nothing); ``ping``: None when not probed."""
    view = HostView(name=leader, info=None, alive=True, hb_age=hb_age, ping=ping)
    state, why = classify_host(view, Timing(hb_grace=hb_grace))
    return state is HostState.FAILED, why


def ping_needed(leader: str, hb_age: float | None, hb_grace: float) -> bool:
    """Ping the leader only if no answer would make it failed (its heartbeat is silent)."""
    return leader_failed(leader, hb_age, False, hb_grace)[0]
