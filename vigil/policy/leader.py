"""Whether the leader is dead, by the controller's own host classification.

An agent that finds the leader key held by a host that is silent on every datastore and
answers no ping revokes that lease at once instead of waiting it out. It asks exactly
what the controller asks of any host (vigil.policy.hoststate.classify_host): the
leader's lease is alive (its key exists), so only "failed" (silent heartbeat, no ping)
lets the key go.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from vigil.model import HostState
from vigil.policy.heartbeats import PING_AFTER_S
from vigil.policy.hoststate import classify_host
from vigil.policy.view import HostView, Timing


@lru_cache(maxsize=8)
def _timing(hb_grace: float) -> Timing:
    """Timing with this grace (frozen, and each agent has one grace: made once, asked every check)."""
    return Timing(hb_grace=hb_grace)


def leader_failed(leader: str, hb_age: float | None, ping: bool | None, hb_grace: float) -> tuple[bool, str]:
    """``hb_age``: how long its datastore heartbeat has not advanced (None: no datastore
    readable here, so its silence means nothing); ``ping``: None when not probed."""
    view = HostView(name=leader, info=None, alive=True, hb_age=hb_age, ping=ping)
    state, why = classify_host(view, _timing(hb_grace))
    return state is HostState.FAILED, why


def ping_needed(leader: str, hb_age: float | None, hb_grace: float) -> bool:
    """Ping the leader only if no answer would make it failed (its heartbeat is silent)."""
    return leader_failed(leader, hb_age, False, hb_grace)[0]


@dataclass(frozen=True)
class LeaderWatch:
    """What an agent does about the leader's heartbeat before any ping answer is in."""

    probe: bool  # ping it in the background now: its heartbeat is late
    ask: bool  # a ping answer decides: with none, the leader is failed (leader_failed)
    next_check: float  # seconds until the next look: right when the grace ends, if sooner


def watch_leader(leader: str, hb_age: float | None, hb_grace: float, period: float) -> LeaderWatch:
    """The pure part of the watching agent's test, shared by the agent
    (vigil.agent.leader) and the simulator: ping a leader whose heartbeat is late in the
    background, so that the answer is in when the grace time ends; until then look again
    right at that moment rather than a whole ``period`` later."""
    late = hb_age is not None and hb_age >= PING_AFTER_S
    ask = ping_needed(leader, hb_age, hb_grace)
    nap = period
    if not ask and late:
        nap = min(period, max(0.05, hb_grace - hb_age + 0.02))  # type: ignore[operator]
    return LeaderWatch(probe=late, ask=ask, next_check=nap)
