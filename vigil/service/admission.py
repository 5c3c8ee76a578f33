"""Admission control in the service: the setting read and written, the check every user
action that takes room runs before it writes, and the capacity and what-if views.

The decisions are the policy's (vigil.policy.admission_control, vigil.policy.whatif) on the
same snapshot the action then guards its write with; this module only reads the snapshot
and turns a refusal into a Conflict whose message gives the numbers.
"""
from __future__ import annotations

import time
from typing import Any

from vigil.model import SpecError
from vigil.policy.admission_control import SETTING, AdmissionSetting, Change, admission_setting, admit, capacity
from vigil.policy.plan import classify_all
from vigil.policy.retry_schedule import SETTING as RETRIES, RetrySchedule
from vigil.policy.drs_settings import safe_drs_settings
from vigil.policy.sdrs import sdrs_round
from vigil.policy.whatif import drs_now, drs_now_json, what_if
from vigil.service.common import Conflict, Invalid, under
from vigil.service.settings import get_setting, put_setting
from vigil.service.view import cluster_view
from vigil.store import keys as K
from vigil.store.etcd import Entry, Store


def guarded(store: Store, snap: dict[str, Entry], change: Change, now: float | None = None) -> tuple[list, list]:
    """``check``, then the compares and ops the action's transaction adds: the policy
    unchanged since ``snap``, and (a policy being on) the admission counter too, bumped, so
    that two actions admitted on the same snapshot cannot both pass."""
    check(snap, change, now)
    key = K.SETTINGS + SETTING
    compares = [store.unchanged(key, snap[key].mod_revision if key in snap else 0)]
    e = snap.get(key)
    if admission_setting({SETTING: e.value} if e is not None and isinstance(e.value, dict) else None).policy == "off":
        return compares, []
    seq = snap.get(K.ADMITTED)
    compares.append(store.unchanged(K.ADMITTED, seq.mod_revision if seq is not None else 0))
    return compares, [store.put_op(K.ADMITTED, {"what": change.what})]


def check(snap: dict[str, Entry], change: Change, now: float | None = None) -> None:
    """Refuse (Conflict, with the figures) an action that would take the cluster below its
    admission control policy; nothing when the policy is off or holds after it."""
    view = cluster_view(snap, time.time() if now is None else now)
    setting = admission_setting(view.settings)
    if setting.policy == "off":
        return
    ok, why = admit(view, setting, {h: s for h, (s, _) in classify_all(view).items()}, change)
    if not ok:
        raise Conflict(why)


def failover_host_refusal(snap: dict[str, Entry], host: str) -> str | None:
    """Why a VM may not be sent to ``host`` by a user (a dedicated failover host), or None."""
    e = snap.get(K.SETTINGS + SETTING)
    s = admission_setting({SETTING: e.value} if e is not None and isinstance(e.value, dict) else None)
    if s.policy == "failover-hosts" and host in s.hosts:
        return (f"{host} is a failover host (admission control): nothing runs there in normal operation; "
                "HA restarts use it")
    return None


def parse_admission(obj: dict[str, Any], known_hosts: frozenset[str]) -> AdmissionSetting:
    """A setting from a request body, validated against the cluster's hosts (Invalid)."""
    try:
        s = AdmissionSetting.from_json(obj)
        s.validate(known_hosts)
    except (SpecError, TypeError, ValueError) as e:
        raise Invalid(str(e)) from e
    return s


async def get_admission(store: Store) -> tuple[AdmissionSetting, int]:
    raw, rev = await get_setting(store, SETTING)
    return admission_setting({SETTING: raw}), rev


async def set_admission(store: Store, obj: dict[str, Any], revision: int | None = None) -> tuple[AdmissionSetting, int]:
    """Validate and store the cluster's policy. Turning one on is not refused when the
    cluster is already below it (vSphere neither): ``vigil cluster capacity`` says so, and
    every action that takes room is refused until it holds again."""
    snap = await store.snapshot()
    s = parse_admission(obj, frozenset(under(snap, K.HOSTS)))
    return s, await put_setting(store, SETTING, s.to_json(), revision)


async def get_retries(store: Store) -> tuple[RetrySchedule, int]:
    raw, rev = await get_setting(store, RETRIES)
    try:
        return (RetrySchedule.from_json(raw) if raw else RetrySchedule()), rev
    except (SpecError, TypeError, ValueError):
        return RetrySchedule(), rev


async def set_retries(store: Store, obj: dict[str, Any], revision: int | None = None) -> tuple[RetrySchedule, int]:
    try:
        s = RetrySchedule.from_json(obj)
        s.validate()
    except (SpecError, TypeError, ValueError) as e:
        raise Invalid(str(e)) from e
    return s, await put_setting(store, RETRIES, s.to_json(), revision)


async def cluster_capacity(store: Store) -> dict[str, Any]:
    """``vigil cluster capacity``: the policy's figures now."""
    snap = await store.snapshot()
    view = cluster_view(snap, time.time())
    setting = admission_setting(view.settings)
    states = {h: s for h, (s, _) in classify_all(view).items()}
    return {"setting": setting.to_json(), **capacity(view, setting, states).to_json()}


async def cluster_what_if(store: Store, fail: list[str]) -> dict[str, Any]:
    """``vigil cluster what-if --fail H``: the controller's plan with those hosts failed."""
    snap = await store.snapshot()
    hosts = under(snap, K.HOSTS)
    unknown = sorted(set(fail) - set(hosts))
    if not fail:
        raise Invalid("name at least one host to fail")
    if unknown:
        raise Invalid(f"unknown host {', '.join(unknown)} (known: {', '.join(sorted(hosts)) or 'none'})")
    return what_if(cluster_view(snap, time.time()), fail).to_json()


async def drs_what_if(store: Store) -> dict[str, Any]:
    """``vigil cluster what-if --drs``: the moves a DRS round would recommend now."""
    snap = await store.snapshot()
    view = cluster_view(snap, time.time())
    settings = safe_drs_settings(view.settings.get("drs"))
    disks, disk_reason = sdrs_round(view, settings)  # Storage DRS too (no cool-downs known here)
    return {"mode": settings.mode, "threshold": settings.threshold, **drs_now_json(drs_now(view, settings)),
            "disk_reason": disk_reason,
            "disk_moves": [{"vm": d.vm, "disk": d.disk, "src": d.src, "dst": d.dst, "size_mb": d.size_mb,
                            "reason": d.reason} for d in disks]}
