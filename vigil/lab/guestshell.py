"""Commands inside a lab guest, for tests and benchmarks of guest-to-guest traffic.

A lab guest started with ``vigil.shell=PORT`` (see vigil/hypervisor/guest/init) runs a
busybox shell per TCP connection on that port of its VM-network address: the script sent
runs, its output comes back when the shell exits. Only on the lab's VM network, only for
guests that asked for it (:func:`with_shell`).
"""
from __future__ import annotations

import dataclasses
import socket
import time

from vigil.model import VMSpec

SHELL_PORT = 7001


def with_shell(spec: VMSpec, port: int = SHELL_PORT) -> VMSpec:
    """``spec`` (a lab guest with an address) with its shell port on."""
    if spec.boot is None:
        raise ValueError(f"VM {spec.name}: not a lab guest (no kernel command line)")
    return dataclasses.replace(spec, boot=dataclasses.replace(
        spec.boot, cmdline=f"{spec.boot.cmdline} vigil.shell={port}"))


def guest_sh(address: str, script: str, timeout: float = 120.0, connect_s: float = 60.0,
             port: int = SHELL_PORT) -> str:
    """Run ``script`` in a shell inside the guest at ``address``; its output (connecting is
    retried for ``connect_s``: the guest may still boot)."""
    deadline = time.monotonic() + connect_s
    while True:
        try:
            sock = socket.create_connection((address, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    with sock:
        sock.settimeout(timeout)
        sock.sendall((script + "\nexit\n").encode())
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out.decode(errors="replace")


__all__ = ["SHELL_PORT", "guest_sh", "with_shell"]
