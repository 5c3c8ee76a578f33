"""Isolation: is this host cut off, and what to do with each VM then (pure decisions)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

from vigil.model import VMSpec
from vigil.policy.host import PowerOff, Shutdown, Wait

IsolationAction = PowerOff | Shutdown | Wait


def is_isolated(lease_lost: bool, peers_answer: bool, isolation_address_answers: bool) -> bool:
    """vSphere's rule: isolated when cut from the cluster (lease) and nothing answers at all.

    A host that still reaches a peer or an isolation address is merely partitioned: its
    VMs keep running, and the controller on the other side does not restart them.
    """
    return lease_lost and not peers_answer and not isolation_address_answers


def isolation_action(spec: VMSpec | None) -> str:
    """What to do with a running VM when the host finds itself isolated.

    A VM whose restart priority is "disabled" is one HA never acts on (vSphere: "no host
    isolation response is made"): powering it off would only stop it, since nothing
    restarts it elsewhere. An FT primary is the exception, decided by the agent: its
    secondary takes over, so the primary must not run on."""
    if spec is None or spec.restart_priority == "disabled":
        return "leave-powered-on"
    return spec.isolation_response


def tick_step(had_lease: bool, lease_ok: bool, isolated: bool, checking: bool) -> Literal["check", "end", "none"]:
    """Each tick: start an isolation check once the lease is lost (one at a time), or end
    the isolation once the lease is back."""
    if had_lease and not lease_ok and not isolated and not checking:
        return "check"
    if lease_ok and isolated:
        return "end"
    return "none"


class StallWatch:
    """This host's own stalls, from the times of its ticks: a gap between two ticks longer
    than ``grace`` (hb_grace: what the controller waits) means it stood still, and may have
    been declared failed meanwhile (see isolation_verdict). The heartbeat tick feeds it;
    the isolation check asks it what counts."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._last: float | None = None
        self.ended, self.stood = 0.0, 0.0  # the last stall: when it ended, how long it was

    def tick(self, now: float) -> None:
        if self._last is not None and now - self._last > self.grace:
            self.ended, self.stood = now, now - self._last
        self._last = now

    def since(self, confirmed: float, now: float | None = None) -> float:
        """How long the host stood still after ``confirmed`` (when the keepalive etcd last
        answered was sent): 0 when the lease was confirmed after its last stall. With
        ``now``, a stall no tick has ended yet counts too (up to ``now``): a loop that
        runs first out of a hang sees it as well."""
        if now is not None and self._last is not None and now - self._last > self.grace:
            return now - self._last
        return self.stood if self.ended > confirmed else 0.0


def keepalive_confirms(stalled_s: float, hb_grace: float = 3.0) -> bool:
    """Whether a keepalive's answer alone confirms the lease (``stalled_s``: how long this
    host stood still since the last confirmation, StallWatch.since).

    Not after a stall past ``hb_grace``: the host's own etcd member stood still with it,
    and one that was the raft leader still takes itself for it for an election timeout
    or two, answering keepalives from its own lease table (etcd renews a lease on the
    leader without asking the quorum), though the other members elected another leader
    meanwhile and the controller there may have declared this host failed and revoked
    its lease. Taken as a confirmation, such an answer wiped the stall out: the isolation
    check then saw a plain partition and the host ran its VMs on, their locks holding off
    the restarts, for as long as the partition lasted. A read needs the quorum, so after
    such a stall the lease counts as confirmed only once one shows the host's
    ``alive/`` key still on it."""
    return stalled_s <= hb_grace


def read_confirms(alive_lease: int | None, lease_id: int) -> bool:
    """After a stall, whether the read that backs a keepalive's answer confirms the lease:
    the host's ``alive/`` key (its lease ``alive_lease``, None: no key) is still on it.
    Gone or on another lease: the cluster let the lease go."""
    return alive_lease is not None and alive_lease == lease_id


def isolation_verdict(lease_ok: bool, isolated: bool, peers_answer: bool, isolation_address_answers: bool,
                      stalled_s: float = 0.0, hb_grace: float = 3.0,
                      ) -> tuple[Literal["none", "partitioned", "isolated"], str]:
    """After the pings: isolated, partitioned, or nothing to do (the lease came back
    meanwhile, or another check got there first).

    ``stalled_s``: how long this host stood still (its own ticks stopped: a hang, a
    frozen VM of the host, a stopped agent) since etcd last confirmed its lease. A host
    that stood still past ``hb_grace`` may have been declared failed meanwhile (silent
    datastore heartbeat and no ping answer: taken as powered off) and its VMs restarted
    elsewhere, held off only by the disk locks. Reaching an isolation address then proves
    nothing, so it gives its VMs up as an isolated host does, instead of running them on
    for the whole partition (with its watchdog fed again, nothing else would stop them)."""
    if lease_ok:
        return "none", "the lease is back"
    if isolated:
        return "none", "already isolated"
    if stalled_s > hb_grace:
        return "isolated", (f"lease lost after this host stood still {stalled_s:.1f}s (past the "
                            f"{hb_grace:g}s the controller waits): its VMs may run elsewhere now, "
                            "applying isolation responses")
    if not is_isolated(True, peers_answer, isolation_address_answers):
        who = "a peer" if peers_answer else "an isolation address"
        return "partitioned", f"lease lost but {who} answers: partitioned, VMs keep running"
    return "isolated", "lease lost and nothing answers: isolated, applying isolation responses"


@dataclass(frozen=True)
class RunningVM:
    """A VM running on the isolated host: its spec (None: adopted, not known yet) and
    whether FT is on for it (then a secondary elsewhere takes over)."""

    spec: VMSpec | None
    ft: bool = False


def vm_isolation_action(vm: str, r: RunningVM) -> IsolationAction:
    """The isolation response for one VM. An FT VM's primary always powers off: its
    secondary takes over, so the primary must not run on, whatever the spec says."""
    action = "power-off" if r.ft else isolation_action(r.spec)
    if action == "power-off":
        return PowerOff(vm, "isolation response: power off", report=True)
    if action == "shutdown":
        return Shutdown(vm, "isolation response: shut down")
    return Wait(vm, "isolation response: leave powered on")


def isolation_actions(vms: Mapping[str, RunningVM]) -> tuple[IsolationAction, ...]:
    """The isolation response of every VM running here, in the order given."""
    return tuple(vm_isolation_action(n, r) for n, r in vms.items())
