"""The five cluster policies an operator sets (admission control, restart retries, VM
monitoring, restart orchestration, DRS) behind one shape, for the API's
/cluster/settings and the dashboard's editors.

Each is read as its values in force (defaults filled in), the object as stored, a one-line
summary and its revision; each is replaced whole (fields not given take their defaults)
through its own module's validation, the one its own route and the CLI use, so a refused
value writes nothing.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable, Mapping

from vigil.model import SpecError
from vigil.policy import vm_monitoring as VM
from vigil.policy.admission_control import SETTING as ADMISSION, admission_setting
from vigil.policy.drs_settings import safe_drs_settings
from vigil.policy.orchestration import SETTING as ORCHESTRATION, read_settings, settings_to_json, validate_settings
from vigil.policy.retry_schedule import SETTING as RETRIES, RetrySchedule
from vigil.service import admission, drs, monitoring
from vigil.service.common import Invalid, NotFound
from vigil.service.settings import get_setting, put_setting
from vigil.store.etcd import Store

NAMES = ("admission", "retries", "monitoring", "orchestration", "drs")
KEYS = {"admission": ADMISSION, "retries": RETRIES, "monitoring": monitoring.NAME, "orchestration": ORCHESTRATION,
        "drs": "drs"}


def _admission(raw: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    s = admission_setting({ADMISSION: raw})
    if s.policy == "slots":
        return s.to_json(), f"slots, {s.failures} host failure(s) to tolerate"
    if s.policy == "percentage":
        return s.to_json(), "percentage reserved" + (
            f" ({s.cpu_percent}% CPU, {s.memory_percent}% memory)" if s.cpu_percent is not None else
            f" for {s.failures} host failure(s)")
    if s.policy == "failover-hosts":
        return s.to_json(), f"failover hosts {', '.join(s.hosts)}"
    return s.to_json(), "off"


def _retries(raw: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    try:
        s = RetrySchedule.from_json(raw) if raw else RetrySchedule()
    except (SpecError, TypeError, ValueError):
        s = RetrySchedule()
    limit = f"at most {s.max_attempts} retries" if s.max_attempts else "retried until it starts"
    return s.to_json(), f"after {', '.join(f'{d:g}' for d in s.delays)} s; {limit}"


def _monitoring(raw: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    s = VM.cluster_settings(raw)
    return asdict(s), s.summary()


def _orchestration(raw: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    v = settings_to_json(read_settings(raw))
    tiers = f"; {len(v['tiers'])} tier(s) of their own" if v.get("tiers") else ""
    return v, f"ready when {v['ready']} + {v['delay_s']:g} s, next tier after {v['timeout_s']:g} s at most{tiers}"


def _drs(raw: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    s = safe_drs_settings(raw)
    return s.to_json(), "off" if s.mode == "off" else f"{s.mode}, threshold {s.threshold}"


READERS: dict[str, Callable[[Mapping[str, Any]], tuple[dict[str, Any], str]]] = {
    "admission": _admission, "retries": _retries, "monitoring": _monitoring, "orchestration": _orchestration,
    "drs": _drs}


def _known(name: str) -> str:
    if name not in READERS:
        raise NotFound(f"no cluster setting named {name!r} (one of {', '.join(NAMES)})")
    return name


async def get_policy(store: Store, name: str) -> dict[str, Any]:
    """One policy: ``{name, value (in force), stored, summary, revision (0: never set)}``."""
    raw, rev = await get_setting(store, KEYS[_known(name)])
    value, summary = READERS[name](raw)
    return {"name": name, "value": value, "stored": raw, "summary": summary, "revision": rev}


async def all_policies(store: Store) -> list[dict[str, Any]]:
    return [await get_policy(store, n) for n in NAMES]


async def set_orchestration(store: Store, body: Mapping[str, Any], revision: int | None = None) -> int:
    """Replace the restart orchestration settings once ``validate_settings`` takes them."""
    try:
        validate_settings(body)
    except SpecError as e:
        raise Invalid(str(e)) from None
    return await put_setting(store, ORCHESTRATION, dict(body), revision)


async def set_policy(store: Store, name: str, body: dict[str, Any], revision: int | None = None) -> dict[str, Any]:
    """Replace one policy (its own validation; Invalid, nothing written, when it refuses)
    and read it back."""
    _known(name)
    if name == "admission":
        await admission.set_admission(store, body, revision)
    elif name == "retries":
        await admission.set_retries(store, body, revision)
    elif name == "monitoring":
        await monitoring.set_monitoring(store, body, revision)
    elif name == "orchestration":
        await set_orchestration(store, body, revision)
    else:
        await drs.set_drs(store, body, revision, replace=True)
    return await get_policy(store, name)
