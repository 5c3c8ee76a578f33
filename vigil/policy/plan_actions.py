"""The actions a controller cycle (vigil.policy.plan) returns: data the controller writes
to etcd in guarded transactions and the simulator and scenario tests read."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from vigil.model import Assignment, HostState
from vigil.policy.view import Retry


@dataclass(frozen=True)
class SetHostState:
    host: str
    state: HostState
    reason: str
    lease: int = 0  # a failed host's lease still alive in etcd: the controller revokes it


@dataclass(frozen=True)
class AssignVM:
    """Hand ``vm`` to ``host``; valid only if the assignment key is still at ``expect_rev``
    and the VM's owner is ``expect_owner`` (the controller's transaction checks both)."""

    vm: str
    host: str
    gen: int
    expect_rev: int
    kind: str  # place | restart | retry | ft-failover
    reason: str
    retry: Retry | None = None
    # The failed host that still holds the ownership key: it is taken from it in the same
    # transaction. None: nobody may own the VM.
    expect_owner: str | None = None
    # an FT VM's epoch: the new assignment voids its standbys (the ft key is reset to no
    # secondary, epoch + 1, in the same transaction)
    ft_epoch: int | None = None
    ft_rev: int = 0  # mod_revision of the ft key the reset expects
    ft_stat_rev: int = 0  # an FT failover: mod_revision of the primary's ftstat key it expects


@dataclass(frozen=True)
class SetSecondary:
    """Give an FT VM a (new) secondary host; the epoch makes every older standby void."""

    vm: str
    host: str
    epoch: int
    expect_rev: int
    reason: str


@dataclass(frozen=True)
class PowerOffForRestart:
    """VM component protection: the VM's host lost one of its datastores while others
    still reach it. Its host powers it off (the assignment names no host), then the VM
    is restarted where its disks are reachable."""

    vm: str
    host: str
    gen: int
    expect_rev: int
    reason: str


@dataclass(frozen=True)
class MarkStale:
    """A copy of a replicated disk of a VM that runs nowhere is on a datastore no running
    host reaches: it is declared stale (``state`` is the new diskstate value, written if
    the key is still at ``expect_rev``), so that the VM can start on its other copy."""

    vm: str
    disk: str
    datastore: str
    state: Mapping[str, Any]
    expect_rev: int
    reason: str


@dataclass(frozen=True)
class Waiting:
    """The VM should run but cannot be placed now; it is placed when capacity appears."""

    vm: str
    reason: str
    # an FT VM waiting for its secondary's host to come back: until when (then a restart)
    deadline: float | None = None


@dataclass(frozen=True)
class NotRestarted:
    vm: str
    reason: str


@dataclass(frozen=True)
class StartMigration:
    """Live-migrate a running VM (maintenance mode empties a host this way; DRS balances)."""

    vm: str
    src: str
    dst: str
    reason: str
    task_reason: str = "maintenance"  # the task's reason field: maintenance | drs


Action = (SetHostState | AssignVM | Waiting | NotRestarted | StartMigration | SetSecondary | PowerOffForRestart
          | MarkStale)


def next_assignment(action: AssignVM) -> Assignment:
    return Assignment(host=action.host, gen=action.gen, reason=action.kind,
                      retries=action.retry.attempts if action.retry is not None else 0)
