"""Fencing (STONITH) through a host's management controller: one driver per protocol
(Redfish over HTTPS, IPMI 2.0 through Debian's ipmitool), each of which powers the host
off and then confirms that it is off. The environment interface (vigil.env.real) calls
``fence``; the policy (vigil.policy.fencing) decides when."""
from __future__ import annotations

import asyncio
import time

from vigil.fencing import ipmi, redfish
from vigil.fencing.device import FenceDevice, FenceError, FenceResult

__all__ = ["FenceDevice", "FenceError", "FenceResult", "fence"]


async def fence(device: FenceDevice) -> FenceResult:
    """Power the host off through its BMC and confirm it, within ``device.timeout_s``.
    Never raises: a BMC that does not answer, refuses, or is too slow gives ok=False with
    the reason (which never holds the password)."""
    t0 = time.monotonic()
    drive = redfish.power_off if device.kind == "redfish" else ipmi.power_off
    try:
        password = device.password()
    except OSError as e:
        return FenceResult(False, f"cannot read the password file {device.password_file}: {e.strerror}", 0.0)
    try:
        detail = await asyncio.wait_for(drive(device, password), device.timeout_s)
    except asyncio.TimeoutError:
        return FenceResult(False, f"no confirmation within {device.timeout_s:g}s", time.monotonic() - t0)
    except FenceError as e:
        return FenceResult(False, str(e), time.monotonic() - t0)
    return FenceResult(True, detail, time.monotonic() - t0)

