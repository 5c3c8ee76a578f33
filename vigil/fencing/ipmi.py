"""IPMI 2.0 over the LAN through Debian's ipmitool: ``chassis power off``, then ``chassis
power status`` until it says off. The password goes in a file (``-f``), never on the
command line; cipher suite 3 (HMAC-SHA1, AES-128) is named so that ipmitool does not
first ask for the list, which some BMCs (ipmi_sim among them) do not answer."""
from __future__ import annotations

import asyncio
import re

from vigil.fencing.device import FenceDevice, FenceError

IPMITOOL = "ipmitool"
POLL_S = 0.05
_STATUS = re.compile(r"Chassis Power is (on|off)", re.I)


def argv(device: FenceDevice, *command: str) -> list[str]:
    return [IPMITOOL, "-I", "lanplus", "-C", "3", "-H", device.address, "-p", str(device.port_or_default),
            "-U", device.user, "-f", device.password_file, "-L", "ADMINISTRATOR", "-N", "1", "-R", "1", *command]


def parse_status(out: str) -> str:
    """"on" or "off" from ``chassis power status``; "" when the answer is not that."""
    m = _STATUS.search(out)
    return m.group(1).lower() if m else ""


def error_line(out: str) -> str:
    """ipmitool's last non-empty line, for the reason of a failed fence."""
    lines = [s.strip() for s in out.splitlines() if s.strip()]
    return lines[-1][:200] if lines else "no output"


async def _run(device: FenceDevice, *command: str) -> str:
    try:
        p = await asyncio.create_subprocess_exec(*argv(device, *command), stdin=asyncio.subprocess.DEVNULL,
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    except OSError as e:
        raise FenceError(f"cannot run {IPMITOOL}: {e.strerror}") from None
    try:
        out, _ = await p.communicate()
    except asyncio.CancelledError:
        if p.returncode is None:
            p.kill()
        raise
    text = out.decode(errors="replace")
    if p.returncode != 0:
        raise FenceError(f"IPMI {device.address}:{device.port_or_default} {' '.join(command)}: {error_line(text)}")
    return text


async def power_off(device: FenceDevice, password: str) -> str:
    """``password`` is not used here: ipmitool reads the file itself."""
    del password
    if parse_status(await _run(device, "chassis", "power", "status")) == "off":
        return f"IPMI {device.address}: already off"
    await _run(device, "chassis", "power", "off")
    while True:
        if parse_status(await _run(device, "chassis", "power", "status")) == "off":
            return f"IPMI {device.address}: chassis power off, status off"
        await asyncio.sleep(POLL_S)
