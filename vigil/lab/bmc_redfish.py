"""The lab's Redfish BMC: one small HTTPS server per host (stdlib http.server, a
certificate from the lab's CA), enough of DSP0266 for a fence: the service root, the
Systems collection, the host's ComputerSystem with its PowerState, and
ComputerSystem.Reset (On, ForceOff, ForceRestart) carried out as the lab's real power
actions. A failed BMC (fault bmc-fail) takes the connection and never answers."""
from __future__ import annotations

import base64
import hmac
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

RESET_TYPES = ["On", "ForceOff", "ForceRestart"]
SILENT_MAX_S = 30.0  # how long a failed BMC holds a connection before it drops it


class Power:
    """What a BMC does to its host: the lab's power actions, its state, whether it failed."""

    def __init__(self, host: str, state: Callable[[], bool], act: Callable[[str], None],
                 failed: Callable[[], bool]) -> None:
        self.host, self.state, self.act, self.failed = host, state, act, failed


def system_json(host: str, on: bool) -> dict:
    path = f"/redfish/v1/Systems/{host}"
    return {"@odata.id": path, "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem", "Id": host,
            "Name": host, "PowerState": "On" if on else "Off",
            "Actions": {"#ComputerSystem.Reset": {"target": f"{path}/Actions/ComputerSystem.Reset",
                                                  "ResetType@Redfish.AllowableValues": RESET_TYPES}}}


def handler(power: Power, user: str, password: str) -> type[BaseHTTPRequestHandler]:
    want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    system = f"/redfish/v1/Systems/{power.host}"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: object) -> None:  # the lab's BMC log has its own lines
            pass

        def _silent(self) -> bool:
            """A failed BMC: hold the connection, answer nothing."""
            if not power.failed():
                return False
            deadline = time.monotonic() + SILENT_MAX_S
            while power.failed() and time.monotonic() < deadline:
                time.sleep(0.1)
            self.close_connection = True
            return True

        def _send(self, code: int, body: dict | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(code)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if hmac.compare_digest(self.headers.get("Authorization", ""), want):
                return True
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="bmc"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self._silent() or not self._authorized():
                return
            p = self.path.rstrip("/")
            if p == "/redfish/v1":
                self._send(200, {"@odata.id": "/redfish/v1", "Id": "RootService", "RedfishVersion": "1.11.0",
                                 "Systems": {"@odata.id": "/redfish/v1/Systems"}})
            elif p == "/redfish/v1/Systems":
                self._send(200, {"@odata.id": "/redfish/v1/Systems", "Members@odata.count": 1,
                                 "Members": [{"@odata.id": system}]})
            elif p == system:
                self._send(200, system_json(power.host, power.state()))
            else:
                self._send(404, {"error": {"message": f"no resource {p}"}})

        def do_POST(self) -> None:  # noqa: N802
            if self._silent() or not self._authorized():
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            except ValueError:
                return self._send(400, {"error": {"message": "not JSON"}})
            if self.path.rstrip("/") != f"{system}/Actions/ComputerSystem.Reset":
                return self._send(404, {"error": {"message": f"no action {self.path}"}})
            kind = body.get("ResetType") if isinstance(body, dict) else None
            if kind not in RESET_TYPES:
                return self._send(400, {"error": {"message": f"ResetType must be one of {RESET_TYPES}"}})
            try:
                power.act(kind)
            except Exception as e:  # noqa: BLE001 (the lab's power action failed: say so)
                return self._send(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
            self._send(204)

    return Handler


def serve(address: str, port: int, power: Power, user: str, password: str, cert: str, key: str) -> ThreadingHTTPServer:
    """Start the host's Redfish server in a thread; returns it (``shutdown()`` stops it)."""
    srv = ThreadingHTTPServer((address, port), handler(power, user, password))
    srv.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, name=f"redfish-{power.host}", daemon=True).start()
    return srv
