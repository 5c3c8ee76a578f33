"""systemd's service notification protocol (sd_notify(3)), for ``Type=notify`` units.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by
$NOTIFY_SOCKET (a leading '@' names an abstract socket). It is small enough to carry here:
of the Python packages for it, one is unmaintained since 2017 and the others bind
libsystemd through a C build. Without $NOTIFY_SOCKET (not run by systemd) every call does
nothing; a failed send is logged once and never raised, since the heartbeat loop sends.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Mapping

log = logging.getLogger("vigil.agent.sdnotify")


def socket_address(environ: Mapping[str, str] | None = None) -> str | None:
    """The notification socket's address from $NOTIFY_SOCKET, or None."""
    raw = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not raw or not (raw.startswith("/") or raw.startswith("@")):
        return None  # unset, or a kind of socket (vsock) this module does not speak
    return "\0" + raw[1:] if raw.startswith("@") else raw


class Notifier:
    """Tells systemd the agent is ready (at the first heartbeat tick), alive (every tick,
    for WatchdogSec=) and stopping."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.address = socket_address(environ)
        self.ready = False
        self.error = ""
        self.sock: socket.socket | None = None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``lines``; False when not run by systemd or it failed."""
        if self.address is None:
            return False
        try:
            if self.sock is None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self.sock.setblocking(False)
            self.sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as e:
            if str(e) != self.error:
                log.warning("sd_notify %s: %s", self.address.lstrip("\0"), e)
                self.error = str(e)
            return False
        return True

    def tick(self) -> None:
        """From the heartbeat loop: READY=1 the first time, WATCHDOG=1 each time."""
        if self.ready:
            self.send("WATCHDOG=1")
        else:
            self.ready = self.send("READY=1", "STATUS=heartbeats running", "WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")
        if self.sock is not None:
            self.sock.close()
            self.sock = None
