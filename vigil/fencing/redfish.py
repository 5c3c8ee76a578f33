"""Redfish: ``ComputerSystem.Reset`` with ``ForceOff``, then ``PowerState`` polled until
"Off" (DMTF DSP0266/DSP2046). httpx, already a dependency, speaks the HTTP: the protocol
is two GETs and a POST, which the parsing functions below read (unit-tested on sample
answers). A system already off is confirmed at once: a second fence of a host is not an
error."""
from __future__ import annotations

import asyncio
import ssl
from typing import Any

import httpx

from vigil.fencing.device import FenceDevice, FenceError

POLL_S = 0.05
SYSTEMS = "/redfish/v1/Systems"
RESET = "#ComputerSystem.Reset"


def system_path(collection: Any) -> str:
    """The first ComputerSystem of /redfish/v1/Systems (a host's BMC manages one)."""
    try:
        return str(collection["Members"][0]["@odata.id"])
    except (KeyError, IndexError, TypeError):
        raise FenceError("the BMC lists no computer system under /redfish/v1/Systems") from None


def reset_target(system: Any, path: str) -> str:
    """Where to POST the reset: the system's advertised action target, else the standard one."""
    try:
        target = system["Actions"][RESET]["target"]
    except (KeyError, TypeError):
        return path.rstrip("/") + "/Actions/ComputerSystem.Reset"
    if not isinstance(target, str) or not target.startswith("/"):
        raise FenceError(f"the BMC's reset target is not a path: {target!r}")
    return target


def force_off_allowed(system: Any) -> bool:
    """False only when the system lists its reset types and ForceOff is not one."""
    try:
        allowed = system["Actions"][RESET]["ResetType@Redfish.AllowableValues"]
    except (KeyError, TypeError):
        return True
    return not isinstance(allowed, list) or "ForceOff" in allowed


def power_state(system: Any) -> str:
    """"On", "Off", "PoweringOn", "PoweringOff" (or "" when the BMC does not say)."""
    v = system.get("PowerState") if isinstance(system, dict) else None
    return v if isinstance(v, str) else ""


def base_url(device: FenceDevice) -> str:
    host = f"[{device.address}]" if ":" in device.address else device.address
    return f"https://{host}:{device.port_or_default}"


def _verify(device: FenceDevice) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=device.ca) if device.ca else False


async def _json(client: httpx.AsyncClient, path: str) -> Any:
    r = await client.get(path)
    if r.status_code != 200:
        raise FenceError(f"GET {path}: HTTP {r.status_code}")
    try:
        return r.json()
    except ValueError:
        raise FenceError(f"GET {path}: not JSON") from None


async def power_off(device: FenceDevice, password: str) -> str:
    """Force the system off and wait until the BMC reports it off; the caller bounds the
    time. Returns what was confirmed."""
    try:
        async with httpx.AsyncClient(base_url=base_url(device), auth=(device.user, password),
                                     verify=_verify(device), timeout=min(2.0, device.timeout_s),
                                     trust_env=False) as client:
            path = system_path(await _json(client, SYSTEMS))
            system = await _json(client, path)
            if power_state(system) == "Off":
                return f"Redfish {path}: already off"
            if not force_off_allowed(system):
                raise FenceError(f"Redfish {path}: ForceOff is not an allowed reset type")
            target = reset_target(system, path)
            r = await client.post(target, json={"ResetType": "ForceOff"})
            if r.status_code not in (200, 202, 204):
                raise FenceError(f"POST {target}: HTTP {r.status_code}")
            while True:
                state = power_state(await _json(client, path))
                if state == "Off":
                    return f"Redfish {path}: ForceOff, PowerState Off"
                await asyncio.sleep(POLL_S)
    except httpx.HTTPError as e:
        raise FenceError(f"Redfish at {base_url(device)}: {type(e).__name__}: {e}") from None
    except (ssl.SSLError, OSError) as e:
        raise FenceError(f"Redfish at {base_url(device)}: {e}") from None
