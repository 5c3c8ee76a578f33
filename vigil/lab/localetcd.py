"""A one-member etcd on 127.0.0.1, outside the lab: for QEMU-level benchmarks and tests
that drive the agent's code against a real store (vigil.lab.ftpair).

It listens on free loopback ports (never the lab's fixed 2379/2380, so it runs beside a
lab), keeps its data under the caller's dir and is killed by its pid at the end.
"""
from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from vigil.lab.etcd import endpoint_healthy, etcd_binary
from vigil.lab.layout import LabError
from vigil.lab.standalone import free_port

START_TIMEOUT_S = 20.0


def loopback_argv(data_dir: Path, client_port: int, peer_port: int, name: str = "local") -> list[str]:
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return [
        etcd_binary(), "--name", name, "--data-dir", str(data_dir),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"{name}={peer}", "--initial-cluster-state", "new",
        "--heartbeat-interval", "100", "--election-timeout", "1000",
        "--logger", "zap", "--log-outputs", "stderr",
    ]


@contextlib.contextmanager
def local_etcd(root: Path) -> Iterator[str]:
    """Run etcd with its data in ``root``/etcd and its log in ``root``/etcd.log; yields its
    endpoint (``127.0.0.1:port``), healthy."""
    root.mkdir(parents=True, exist_ok=True)
    client = free_port()
    peer = free_port()
    while peer == client:
        peer = free_port()
    endpoint = f"127.0.0.1:{client}"
    with open(root / "etcd.log", "wb") as logf:
        proc = subprocess.Popen(loopback_argv(root / "etcd", client, peer), stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not endpoint_healthy(endpoint, timeout=0.5):
            if proc.poll() is not None:
                raise LabError(f"etcd exited ({proc.returncode}); see {root / 'etcd.log'}")
            if time.monotonic() > deadline:
                raise LabError(f"etcd not healthy within {START_TIMEOUT_S:.0f}s; see {root / 'etcd.log'}")
            time.sleep(0.1)
        yield endpoint
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
