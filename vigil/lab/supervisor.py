"""Per-host supervisor: the lab host's systemd and hardware watchdog.

    python -m vigil.lab.supervisor --host host1 [--state /run/vigil-lab/lab.json]

Runs inside the host's network and mount namespaces (the lab starts it with nsenter, in
its own session). It

- "boots" the host: starts the host's etcd member (if it has one), the agent and the API
  server (vigil api);
- restarts either one ~1 s after it exits (systemd Restart=always), except etcd while the
  flag file `etcd.down` exists in the host's dir (the kill_etcd fault);
- plays the hardware watchdog: the agent pets it by writing/touching `watchdog_file`; the
  watchdog arms the first time the file is written after a boot; when its mtime is older
  than `watchdog_timeout_s`, the supervisor "resets the host": SIGKILL every process in the
  host's network namespace but itself, disarm, wait `reboot_delay_s`, boot again. To be as
  punctual as a hardware timer on a loaded machine it runs SCHED_FIFO (reset on fork, so
  the host's processes it starts are ordinary ones) and sleeps until the expiry, not a
  fixed tick; each reset records how late it was (`reset_log`: from expiry to the last
  process killed), which the lab tests hold against the controller's margin
  (docs/watchdog.md). The `watchdog-late` fault adds seconds to the timeout: a device that
  fires late, to test what happens then;
- is a child subreaper, so daemonized grandchildren (QEMU) are reaped here;
- writes its view to `supervisor.json` in the host's dir (pids, state, resets), atomically;
- on SIGTERM stops its children and exits.

The hang fault SIGSTOPs everything of the host except this process (so the watchdog can
fire); power-off SIGKILLs it too.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .layout import (ETCD_DOWN_FLAG, STATE_FILE, SUPERVISOR_STATUS, WATCHDOG_LATE_FLAG,
                     kill_ns_processes, pids_in_ns)

log = logging.getLogger("vigil.lab.supervisor")

PR_SET_CHILD_SUBREAPER = 36
TICK = 0.1
REALTIME_PRIORITY = 10   # SCHED_FIFO, below the kernel's own threads (50)
RESET_LOG = 20           # resets kept in the status


def be_punctual() -> bool:
    """SCHED_FIFO for this process only (children get SCHED_OTHER back: reset on fork).
    The supervisor sleeps nearly all the time, so it cannot starve the machine; False
    where the kernel refuses (no CAP_SYS_NICE), and the stand-in is then as late as the
    scheduler makes it, which reset_log shows."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(REALTIME_PRIORITY))
        return True
    except (OSError, AttributeError) as e:
        log.warning("watchdog stand-in not real-time (%s): it may fire late on a loaded machine", e)
        return False


class Child:
    def __init__(self, name: str, argv: list[str], log_path: Path, env_file: str | None = None):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.env_file = env_file  # ETCD_* settings (etc/default/etcd), read at each start as systemd does
        self.proc: subprocess.Popen | None = None
        self.restart_at: float | None = 0.0   # monotonic time of the next start; None = never
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def start(self, env: dict[str, str]) -> None:
        if self.env_file:
            from vigil.bootstrap.etcd_member import parse

            env = {k: v for k, v in env.items() if not k.startswith("ETCD_")}
            env |= parse(Path(self.env_file).read_text())
        with open(self.log_path, "ab", buffering=0) as out:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env=env, cwd="/")
        self.starts += 1
        self.restart_at = None
        log.info("started %s (pid %d): %s", self.name, self.proc.pid, " ".join(self.argv))


class Supervisor:
    def __init__(self, host: str, state_path: Path):
        state = json.loads(Path(state_path).read_text())
        h = state["hosts"][host]
        cfg = state["config"]
        self.host = host
        self.dir = Path(h["dir"])
        self.watchdog_file = Path(h["watchdog_file"])
        self.watchdog_timeout = float(cfg["watchdog_timeout_s"])
        self.reboot_delay = float(cfg["reboot_delay_s"])
        self.restart_delay = float(cfg.get("restart_delay_s", 1.0))
        self.status_path = self.dir / SUPERVISOR_STATUS
        self.etcd_flag = self.dir / ETCD_DOWN_FLAG
        self.late_flag = self.dir / WATCHDOG_LATE_FLAG
        self.realtime = False
        self.reset_log: list[dict] = []
        self._expires_at: float | None = None   # wall clock, of the last pet seen
        self.etcd = (Child("etcd", h["etcd_argv"], Path(h["etcd_log"]), h.get("etcd_env_file"))
                     if h.get("etcd_argv") else None)
        self.agent = Child("agent", h["agent_argv"], Path(h["agent_log"]))
        self.api = Child("api", h["api_argv"], Path(h["api_log"])) if h.get("api_argv") else None
        self.env = dict(os.environ, VIGIL_LAB_HOST=host)
        self.env.pop("NOTIFY_SOCKET", None)
        self.state = "booting"
        self.boots = 0
        self.resets = 0
        self.last_reset: float | None = None
        self.boot_at = 0.0
        self.armed = False
        self.stopping = False
        self._last_status: dict | None = None

    # --- children ----------------------------------------------------------------------
    def children(self) -> list[Child]:
        return [c for c in (self.etcd, self.agent, self.api) if c is not None]

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for c in self.children():
                if c.proc is not None and c.proc.pid == pid and c.proc.returncode is None:
                    c.proc.returncode = os.waitstatus_to_exitcode(status)
                    log.info("%s (pid %d) exited: %s", c.name, pid, c.proc.returncode)
                    if self.state == "running":
                        c.restart_at = time.monotonic() + self.restart_delay

    def boot(self) -> None:
        self.boots += 1
        self.state = "running"
        self.armed = False
        try:
            self.watchdog_file.unlink()
        except FileNotFoundError:
            pass
        log.info("booting %s (boot %d)", self.host, self.boots)
        for c in self.children():
            c.restart_at = time.monotonic()
        self.start_due()

    def start_due(self) -> None:
        now = time.monotonic()
        for c in self.children():
            if c.pid is not None or c.restart_at is None or now < c.restart_at:
                continue
            if c is self.etcd and self.etcd_flag.exists():
                continue   # kept down by the kill_etcd fault; started when the flag goes
            try:
                c.start(self.env)
            except OSError as e:
                log.error("cannot start %s: %s", c.name, e)
                c.restart_at = now + self.restart_delay

    # --- watchdog ----------------------------------------------------------------------
    def injected_lateness(self) -> float:
        """Seconds the watchdog-late fault adds to the timeout (0 without it)."""
        try:
            return max(0.0, float(self.late_flag.read_text().strip() or 0))
        except (FileNotFoundError, ValueError):
            return 0.0

    def check_watchdog(self) -> None:
        try:
            mtime = self.watchdog_file.stat().st_mtime
        except FileNotFoundError:
            self._expires_at = None
            return
        if not self.armed:
            self.armed = True
            log.info("watchdog armed (timeout %gs)", self.watchdog_timeout)
        expiry = mtime + self.watchdog_timeout
        self._expires_at = expiry
        now = time.time()
        injected = self.injected_lateness()
        if now > expiry + injected:
            self.reset(f"watchdog expired: last pet {now - mtime:.2f}s ago"
                       + (f" (fault: {injected:g}s late)" if injected else ""))
            done = time.time()
            self.reset_log = (self.reset_log + [{"expired": expiry, "done": done, "late_s": round(done - expiry, 3),
                                                 "injected_s": injected}])[-RESET_LOG:]
            log.warning("reset complete %.3fs after the watchdog's expiry", done - expiry)

    def sleep_time(self) -> float:
        """Until the next tick, or the watchdog's expiry if that comes first."""
        if self.state != "running" or self._expires_at is None:
            return TICK
        return min(TICK, max(0.005, self._expires_at + self.injected_lateness() - time.time()))

    def reset(self, reason: str) -> None:
        log.warning("RESET %s: %s; killing every process of the host", self.host, reason)
        self.state = "down"
        self.resets += 1
        self.last_reset = time.time()
        self.armed = False
        for c in self.children():
            c.restart_at = None
        try:
            n = kill_ns_processes("/proc/self/ns/net", exclude=[os.getpid()], timeout=10)
            log.warning("killed %d processes; rebooting in %gs", n, self.reboot_delay)
        except Exception as e:  # noqa: BLE001 - a supervisor must keep going
            log.error("reset: %s", e)
        self.reap()
        try:
            self.watchdog_file.unlink()
        except FileNotFoundError:
            pass
        self.boot_at = time.monotonic() + self.reboot_delay

    # --- status ------------------------------------------------------------------------
    def write_status(self) -> None:
        status = {
            "host": self.host, "pid": os.getpid(), "state": self.state,
            "boots": self.boots, "resets": self.resets, "last_reset": self.last_reset,
            "watchdog_armed": self.armed,
            "watchdog_realtime": self.realtime,
            "reset_log": self.reset_log,
            "etcd_pid": self.etcd.pid if self.etcd else None,
            "agent_pid": self.agent.pid,
            "api_pid": self.api.pid if self.api else None,
            "etcd_kept_down": self.etcd_flag.exists(),
        }
        if status == self._last_status:
            return
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, self.status_path)
        self._last_status = status

    # --- main loop ---------------------------------------------------------------------
    def stop(self, *_):
        self.stopping = True

    def shutdown(self) -> None:
        log.info("stopping: terminating children")
        self.state = "stopped"
        for c in self.children():
            c.restart_at = None
            if c.pid:
                try:
                    os.kill(c.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and any(c.pid for c in self.children()):
            self.reap()
            time.sleep(0.05)
        for c in self.children():
            if c.pid:
                try:
                    os.kill(c.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.reap()
        self.write_status()

    def run(self) -> int:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.realtime = be_punctual()
        log.info("supervisor for %s up (pid %d, netns pids now %s)", self.host, os.getpid(),
                 pids_in_ns("/proc/self/ns/net"))
        self.boot()
        self.write_status()
        while not self.stopping:
            self.reap()
            if self.state == "running":
                self.start_due()
                self.check_watchdog()
            elif self.state == "down" and time.monotonic() >= self.boot_at:
                self.boot()
            self.write_status()
            time.sleep(self.sleep_time())
        self.shutdown()
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vigil.lab.supervisor")
    p.add_argument("--host", required=True)
    p.add_argument("--state", default=str(STATE_FILE))
    args = p.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format="%(asctime)s %(levelname)s supervisor[%(process)d] %(message)s")
    return Supervisor(args.host, Path(args.state)).run()


if __name__ == "__main__":
    sys.exit(main())
