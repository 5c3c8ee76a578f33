"""The lab's BMC process (vigil.lab.bmc starts and stops it): a Redfish server per host,
an ipmi_sim per host, and the Unix socket their chassis control programs ask."""
from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socketserver
import subprocess
import sys
import threading
import time

from . import bmc_redfish, faults
from .bmc import BMC_DIR, CONTROL, IPMI_PORT, PASSWORD_FILE, PID_FILE, REDFISH_PORT, USER, ipmi_port, redfish_port
from .lab import Lab

CHASSIS = """#!{python} -I
# ipmi_sim's chassis control for {host}: "get power" / "set power 0|1", asked of the lab's BMC process.
import socket, sys
args = sys.argv[2:]
s = socket.socket(socket.AF_UNIX)
s.connect({control!r})
s.sendall((" ".join(["{host}"] + args) + "\\n").encode())
out = s.makefile().read()
sys.stdout.write(out)
sys.exit(0 if not out.startswith("error") else 1)
"""

LAN_CONF = """name "{host}"
set_working_mc 0x20
  startlan 1
    addr {address} {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid {guid}
  endlan
  chassis_control "{chassis} 0x20"
  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"""

EMU = "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n"


class BmcProcess:
    def __init__(self) -> None:
        self.lab = Lab(progress=lambda m: print(m, flush=True))
        self.lock = threading.Lock()
        self.ipmi: dict[str, subprocess.Popen] = {}
        self.stopped: set[str] = set()

    def is_on(self, host: str) -> bool:
        st = self.lab.load_state() or {}
        return not any(f["kind"] == "power_off" and f.get("host") == host for f in st.get("faults", []))

    def failed(self, host: str) -> bool:
        st = self.lab.load_state() or {}
        return any(f["kind"] == "bmc_fail" and f.get("host") == host for f in st.get("faults", []))

    def act(self, host: str, kind: str) -> None:
        with self.lock:
            print(f"{time.time():.3f} {host}: {kind}", flush=True)
            if kind in ("ForceOff", "ForceRestart") and self.is_on(host):
                faults.power_off(self.lab, host)
            if kind in ("On", "ForceRestart") and not self.is_on(host):
                faults.power_on(self.lab, host)

    def control(self, line: str) -> str:
        """One request of a chassis control program: HOST get power | HOST set power 0|1."""
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "get":
            return "".join(f"{p}:{int(self.is_on(parts[0]))}\n" if p == "power" else f"{p}:default\n"
                           for p in parts[2:])
        if len(parts) == 4 and parts[1:3] == ["set", "power"]:
            self.act(parts[0], "On" if parts[3] == "1" else "ForceOff")
            return ""
        if len(parts) >= 2 and parts[1] == "set":
            return ""  # reset pulses and boot devices: nothing to do in the lab
        return f"error: cannot do {line!r}\n"

    def serve_control(self) -> None:
        proc = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    out = proc.control(self.rfile.readline().decode())
                except Exception as e:  # noqa: BLE001
                    out = f"error: {type(e).__name__}: {e}\n"
                self.wfile.write(out.encode())

        with contextlib.suppress(FileNotFoundError):
            CONTROL.unlink()
        srv = socketserver.ThreadingUnixStreamServer(str(CONTROL), Handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    def start_ipmi(self, host: str, index: int, address: str, password: str) -> None:
        d = BMC_DIR / f"ipmi-{host}"
        d.mkdir(exist_ok=True)
        chassis = d / "chassis"
        chassis.write_text(CHASSIS.format(python=sys.executable, host=host, control=str(CONTROL)))
        chassis.chmod(0o700)
        conf = d / "lan.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(LAN_CONF.format(host=host, address=address, port=ipmi_port(index), guid=secrets.token_hex(16),
                                    chassis=chassis, user=USER, password=password))
        (d / "emu.conf").write_text(EMU)
        log = open(d / "ipmi_sim.log", "ab")
        p = subprocess.Popen(["ipmi_sim", "-n", "-c", str(conf), "-f", str(d / "emu.conf"), "-s", str(d / "state")],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(d))
        (d / "pid").write_text(str(p.pid))
        self.ipmi[host] = p

    def run(self) -> None:
        st = self.lab.state
        address = st["bridge"]["address"]
        password = PASSWORD_FILE.read_text().strip()
        self.serve_control()
        for host, hs in st["hosts"].items():
            power = bmc_redfish.Power(host, lambda h=host: self.is_on(h), lambda k, h=host: self.act(h, k),
                                      lambda h=host: self.failed(h))
            bmc_redfish.serve(address, redfish_port(hs["index"]), power, USER, password,
                              str(BMC_DIR / "server-cert.pem"), str(BMC_DIR / "server-key.pem"))
            self.start_ipmi(host, hs["index"], address, password)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        PID_FILE.write_text(str(os.getpid()))
        print(f"BMCs up on {address}: Redfish {REDFISH_PORT}+i, IPMI {IPMI_PORT}+i", flush=True)
        while not stop.wait(0.1):
            for host, p in self.ipmi.items():  # a failed BMC's ipmi_sim stops answering
                failed = self.failed(host)
                if failed != (host in self.stopped):
                    p.send_signal(signal.SIGSTOP if failed else signal.SIGCONT)
                    (self.stopped.add if failed else self.stopped.discard)(host)
        for p in self.ipmi.values():
            p.send_signal(signal.SIGCONT)
            p.terminate()
        for p in self.ipmi.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(2)


if __name__ == "__main__":
    BmcProcess().run()
