"""Reaching other hosts: ICMP echo through the system's ping (the real environment's)."""
from __future__ import annotations

import asyncio


async def ping(address: str, timeout_s: float = 1.0) -> bool:
    """One ICMP echo; True when it was answered."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "ping", "-n", "-q", "-c", "1", "-W", f"{timeout_s:g}", address,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return False
    try:
        return await asyncio.wait_for(proc.wait(), timeout_s + 1) == 0
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return False


async def any_answers(addresses: list[str], timeout_s: float = 1.0) -> bool:
    if not addresses:
        return False
    results = await asyncio.gather(*(ping(a, timeout_s) for a in addresses))
    return any(results)
