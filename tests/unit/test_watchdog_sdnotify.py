"""sd_notify against a real AF_UNIX datagram socket, as systemd binds it."""
from __future__ import annotations

import os
import socket
import uuid

from vigil.agent.sdnotify import Notifier, socket_address


def bound(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    return s


def test_ready_once_then_watchdog_each_tick_then_stopping(tmp_path):
    path = str(tmp_path / "notify")
    with bound(path) as srv:
        n = Notifier({"NOTIFY_SOCKET": path})
        n.tick()
        n.tick()
        n.stopping()
        got = [srv.recv(4096).decode() for _ in range(3)]
    assert got[0].splitlines() == ["READY=1", "STATUS=heartbeats running", "WATCHDOG=1"]
    assert got[1:] == ["WATCHDOG=1", "STOPPING=1"]


def test_an_abstract_socket():
    name = f"vigil-test-{uuid.uuid4().hex}"
    assert socket_address({"NOTIFY_SOCKET": "@" + name}) == "\0" + name
    with bound("\0" + name) as srv:
        Notifier({"NOTIFY_SOCKET": "@" + name}).tick()
        assert srv.recv(4096).startswith(b"READY=1\n")


def test_without_systemd_nothing_is_sent():
    n = Notifier({})
    n.tick()
    assert n.address is None and not n.ready and n.sock is None


def test_a_socket_gone_is_logged_once_and_ready_is_retried(tmp_path, caplog):
    path = str(tmp_path / "gone")
    n = Notifier({"NOTIFY_SOCKET": path})
    n.tick()
    n.tick()
    assert not n.ready
    assert sum("sd_notify" in r.message for r in caplog.records) == 1
    with bound(path) as srv:
        n.tick()
        assert srv.recv(4096).startswith(b"READY=1\n") and n.ready
    n.stopping()


def test_the_agent_environment_is_read_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "s"))
    assert Notifier().address == str(tmp_path / "s")
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert Notifier().address is None
    assert os.environ.get("NOTIFY_SOCKET") is None
