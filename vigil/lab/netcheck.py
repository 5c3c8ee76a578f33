"""A TCP client of the lab guest's port 7000 (see vigil/hypervisor/guest/init), for tests of
connections that must survive a live migration or an FT failover.

It sends "req N" and waits for "ack N C" before the next request, N from 1, on one
connection, and records each answer's time. A reset, a wrong answer or no answer within
``timeout_s`` ends it with ``error`` set. Traffic goes only to the lab's VM network.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

GUEST_PORT = 7000


@dataclass
class EchoClient:
    address: str
    interval_s: float = 0.05
    timeout_s: float = 60.0
    acks: list[tuple[int, float]] = field(default_factory=list)  # (N, time answered)
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @staticmethod
    def connect(address: str, timeout_s: float = 60.0) -> socket.socket:
        """A connection to the guest, retried until it answers (it may still boot)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return socket.create_connection((address, GUEST_PORT), timeout=2.0)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def start(self) -> "EchoClient":
        sock = self.connect(self.address, self.timeout_s)
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def _run(self, sock: socket.socket) -> None:
        sock.settimeout(self.timeout_s)
        buf = b""
        n = 0
        try:
            with sock:
                while not self._stop.is_set():
                    n += 1
                    sock.sendall(f"req {n}\n".encode())
                    while b"\n" not in buf:
                        chunk = sock.recv(4096)
                        if not chunk:
                            raise ConnectionError(f"connection closed by the guest after ack {n - 1}")
                        buf += chunk
                    line, buf = buf.split(b"\n", 1)
                    if line.decode() != f"ack {n} {n}":
                        raise ValueError(f"request {n} answered {line.decode()!r}")
                    self.acks.append((n, time.monotonic()))
                    time.sleep(self.interval_s)
        except (OSError, ValueError) as e:
            self.error = f"{type(e).__name__}: {e}"

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 5)

    @property
    def last(self) -> int:
        return self.acks[-1][0] if self.acks else 0

    def longest_gap_s(self, first: int = 0, last: int | None = None) -> float:
        """The longest wait between two answers (the client's view of an outage), among
        the answers to requests ``first`` to ``last``."""
        times = [t for n, t in self.acks if n >= first and (last is None or n <= last)]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)


__all__ = ["EchoClient", "GUEST_PORT"]
