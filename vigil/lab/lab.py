"""The lab: a real cluster on one machine (see DESIGN.md, "The lab").

    lab = Lab(progress=print)
    lab.up(LabConfig(hosts=3, datastores=2))
    lab.status()
    lab.down()

One lab per machine; its state lives in /run/vigil-lab/lab.json. `down()` finds what to
remove from that file *and* from the names the lab uses (netns vigil-*, links vgl-h* and
vigilbr0, mounts under /run/vigil-lab and /var/lib/vigil-lab, loop devices on
/var/lib/vigil-lab/arrays/*.img, nft table bridge vigil_lab), so it works after a failed
`up`, without a state file, and twice in a row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from vigil.config import cache_dir
from vigil.hypervisor.accel import probe_accel, reason as accel_reason

from . import datastores as dsmod
from . import etcd as etcdmod
from . import net, preflight
from .guest_image import build_guest_image
from .layout import (AGENT_CONFIG, AGENT_LOG, BRIDGE, CLUSTER_FILE, DATA_DIR, DS_DIR, HOST_VM_BRIDGE, VM_NETWORK,
                     ETCD_DATA_DIR, ETCD_DOWN_FLAG, ETCD_LOG, HOSTS_DIR, MAX_ETCD_MEMBERS,
                     MNT_NS_DIR, NETNS_PREFIX, RUN_DIR, STATE_FILE, STORE_DIR,
                     SUPERVISOR_LOG, SUPERVISOR_STATUS, WATCHDOG_FILE, LabCommandError,
                     LabError, datastore_path, host_dir, host_exec_argv, host_name,
                     image_path, kill_ns_processes, mntns_path, netns_name, netns_path,
                     ns_inode, pid_alive, pids_in_ns, run, signal_pids, store_path,
                     veth_name, wait_for)

__all__ = ["Lab", "LabConfig", "LabError", "host_exec_argv"]

Progress = Callable[[str], None]
LOCK_FILE = RUN_DIR / ".lock"
STATE_VERSION = 1


@dataclass
class LabConfig:
    hosts: int = 3
    datastores: int = 2
    subnet: str = "10.77.0.0/24"
    etcd_members: int | None = None        # default: one per host, at most 5
    watchdog_timeout_s: float = 5.0
    reboot_delay_s: float = 20.0
    restart_delay_s: float = 1.0
    # The agent's command line; "{config}", "{host}", "{python}", "{watchdog}" are
    # replaced. Default: <venv>/bin/vigil agent --config {config}
    agent_command: list[str] | None = None
    memory_mb: int | None = None           # per host; default: half the RAM shared out
    cpus: int | None = None                # per host; default: the machine's CPUs
    etcd_timeout_s: float = 30.0

    def validate(self) -> None:
        if not 1 <= self.hosts <= 200:
            raise LabError("hosts must be between 1 and 200")
        if not 0 <= self.datastores <= 100:
            raise LabError("datastores must be between 0 and 100")
        m = self.members
        if not 0 <= m <= min(self.hosts, MAX_ETCD_MEMBERS) or m == 0:
            raise LabError(f"etcd_members must be between 1 and {min(self.hosts, MAX_ETCD_MEMBERS)}")

    @property
    def members(self) -> int:
        return self.etcd_members if self.etcd_members is not None else min(self.hosts, MAX_ETCD_MEMBERS)


def default_agent_command() -> list[str]:
    return [str(Path(sys.executable).parent / "vigil"), "agent", "--config", "{config}"]


def dummy_agent_command() -> list[str]:
    """A stand-in agent that only pets the watchdog (tests, demos)."""
    return ["{python}", "-m", "vigil.lab.dummy_agent", "--config", "{config}"]


def _machine_memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 4096








def _atomic_write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Lab:
    """The machine's lab. Cheap to construct: all state is in STATE_FILE."""

    def __init__(self, progress: Progress | None = None):
        self.progress: Progress = progress or (lambda msg: None)

    # --- state -------------------------------------------------------------------------
    def load_state(self) -> dict | None:
        try:
            return json.loads(STATE_FILE.read_text())
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise LabError(f"{STATE_FILE} is corrupt: {e}; run 'vigil lab down'") from e

    @property
    def state(self) -> dict:
        st = self.load_state()
        if st is None:
            raise LabError("no lab is up; run 'vigil lab up' first")
        return st

    def save_state(self, state: dict) -> None:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        _atomic_write_json(STATE_FILE, state)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialises state changes (faults from several threads or processes)."""
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        with open(LOCK_FILE, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def mutate(self) -> Iterator[dict]:
        """Read-modify-write the state under the lock."""
        with self.locked():
            st = self.state
            yield st
            self.save_state(st)

    # --- queries -----------------------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        return list(self.state["hosts"])

    @property
    def datastores(self) -> list[str]:
        return list(self.state["datastores"])

    def address(self, host: str) -> str:
        return self.host(host)["address"]

    def host(self, host: str, state: dict | None = None) -> dict:
        st = state or self.state
        try:
            return st["hosts"][host]
        except KeyError:
            raise LabError(f"no host {host!r} in the lab (hosts: {', '.join(st['hosts'])})") from None

    @property
    def etcd_endpoints(self) -> list[str]:
        return list(self.state["etcd"]["endpoints"])

    def host_exec_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        self.host(host)
        return host_exec_argv(host, argv)

    def exec(self, host: str, argv: Sequence[str], check: bool = True,
             timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a command on a host (its netns and mount namespace), output captured."""
        return run(self.host_exec_argv(host, argv), check=check, timeout=timeout)

    def ping(self, src: str, dst: str, timeout_s: float = 1.0) -> bool:
        """One ICMP echo from host `src` to a host name or an address."""
        addr = self.address(dst) if dst.startswith("host") else dst
        wait = str(max(1, int(round(timeout_s))))
        return self.exec(src, ["ping", "-n", "-q", "-c", "1", "-W", wait, addr],
                         check=False, timeout=timeout_s + 5).returncode == 0

    def supervisor_status(self, host: str) -> dict:
        """The supervisor's own status file (may be stale if it died: check pids)."""
        try:
            return json.loads((host_dir(host) / SUPERVISOR_STATUS).read_text())
        except (OSError, ValueError):
            return {}

    def supervisor_pid(self, host: str) -> int | None:
        pid = self.host(host).get("supervisor_pid") or self.supervisor_status(host).get("pid")
        return pid if pid_alive(pid) else None

    def host_pids(self, host: str) -> list[int]:
        """Every process in the host's network namespace (like `ip netns pids`)."""
        return pids_in_ns(netns_path(host))

    def _pid_of(self, host: str, key: str) -> int | None:
        pid = self.supervisor_status(host).get(key)
        if pid and pid_alive(pid) and pid in self.host_pids(host):
            return pid
        return None

    def agent_pid(self, host: str) -> int | None:
        return self._pid_of(host, "agent_pid")

    def etcd_pid(self, host: str) -> int | None:
        return self._pid_of(host, "etcd_pid")

    def is_up(self) -> bool:
        st = self.load_state()
        return st is not None and self._alive(st)

    @staticmethod
    def _alive(st: dict) -> bool:
        for name, h in st.get("hosts", {}).items():
            if netns_path(name).exists() or pid_alive(h.get("supervisor_pid")):
                return True
        return False

    # --- up ----------------------------------------------------------------------------
    def up(self, config: LabConfig | None = None, **overrides) -> dict:
        """Build the lab; returns the state. On failure everything is removed again and
        LabError raised (with the tails of the logs)."""
        cfg = dataclasses.replace(config or LabConfig(), **overrides)
        cfg.validate()
        self._preflight()
        st = self.load_state()
        if st is not None and self._alive(st):
            hosts = ", ".join(st.get("hosts", {}))
            raise LabError(f"a lab is already up ({len(st.get('hosts', {}))} hosts: {hosts}; "
                           f"state {STATE_FILE}); run 'vigil lab down' first")
        if (st is not None or net.lab_netns() or net.lab_links() or self._lab_mounts()
                or dsmod.lab_loop_devices()):
            self.progress("cleaning up a stale lab")
            self.down()
        try:
            return self._up(cfg)
        except BaseException as e:
            logs = self.log_tails()
            self.progress(f"lab up failed ({e}); cleaning up")
            try:
                self.down()
            except Exception as e2:  # noqa: BLE001
                self.progress(f"cleanup after failed up also failed: {e2}")
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            raise LabError(f"lab up failed: {e}{logs}") from e

    def _preflight(self) -> None:
        why = preflight.problems()
        if why:
            raise LabError(why)

    @staticmethod
    def _lab_mounts() -> list[str]:
        from .layout import read_mounts
        prefixes = (str(RUN_DIR) + "/", str(DATA_DIR) + "/")
        return [p for p in read_mounts() if p.startswith(prefixes)]

    def _up(self, cfg: LabConfig) -> dict:
        subnet = net.Subnet(cfg.subnet)
        hosts = [host_name(i) for i in range(1, cfg.hosts + 1)]
        dss = [f"ds{i}" for i in range(1, cfg.datastores + 1)]
        members = {h: subnet.host_address(i) for i, h in enumerate(hosts[:cfg.members], 1)}
        endpoints = [f"{a}:2379" for a in members.values()]
        memory_mb = cfg.memory_mb or max(512, (_machine_memory_mb() // 2 // cfg.hosts) // 256 * 256)
        cpus = cfg.cpus or os.cpu_count() or 2
        agent_cmd = cfg.agent_command or default_agent_command()

        for d in (RUN_DIR, HOSTS_DIR, STORE_DIR, DS_DIR, ETCD_DATA_DIR):
            d.mkdir(parents=True, exist_ok=True)
        st: dict = {
            "version": STATE_VERSION, "created": time.time(), "phase": "building",
            "config": dataclasses.asdict(cfg) | {"agent_command": agent_cmd},
            "subnet": cfg.subnet,
            "bridge": {"name": BRIDGE, "address": subnet.bridge_address},
            "hosts": {}, "datastores": {},
            "etcd": {"members": members, "endpoints": endpoints},
            "faults": [],
        }
        for i, h in enumerate(hosts, 1):
            d = host_dir(h)
            addr = subnet.host_address(i)
            st["hosts"][h] = {
                "index": i, "address": addr, "netns": netns_name(h), "veth": veth_name(h),
                "mntns": str(mntns_path(h)), "dir": str(d),
                "agent_config": str(d / AGENT_CONFIG), "watchdog_file": str(d / WATCHDOG_FILE),
                "agent_log": str(d / AGENT_LOG), "etcd_log": str(d / ETCD_LOG),
                "supervisor_log": str(d / SUPERVISOR_LOG),
                "etcd_member": h in members,
                "etcd_argv": etcdmod.member_argv(h, addr, members) if h in members else None,
                "agent_argv": [a.format(config=d / AGENT_CONFIG, host=h, python=sys.executable,
                                        watchdog=d / WATCHDOG_FILE) for a in agent_cmd],
                "supervisor_pid": None,
            }
        for ds in dss:
            st["datastores"][ds] = {"path": str(datastore_path(ds)), "store": str(store_path(ds)),
                                    "image": str(image_path(ds)), "device": None}
        self.save_state(st)

        self.progress(f"network: bridge {BRIDGE} {subnet.bridge_address}/{subnet.prefixlen}")
        net.create_bridge(subnet.bridge_address, subnet.prefixlen)
        net.create_vm_bridge()
        dsmod.prepare_mntns_dir()
        for h in hosts:
            hs = st["hosts"][h]
            self.progress(f"{h}: netns {hs['netns']}, {hs['veth']} <-> eth0 {hs['address']}")
            net.create_host_net(h, hs["address"], subnet.prefixlen)
            net.create_host_vmnet(h)
            dsmod.create_host_mntns(h)
            d = Path(hs["dir"])
            (d / "run").mkdir(parents=True, exist_ok=True)
        for ds in dss:
            device = dsmod.create_datastore(ds)
            st["datastores"][ds]["device"] = device
            self.save_state(st)
            self.progress(f"datastore {ds}: ext4 on {device} ({image_path(ds)}) at "
                          f"{datastore_path(ds)} on every host")
            for h in hosts:
                dsmod.mount_datastore_in_host(h, ds, device)
            dsmod.mount_datastore_in_root(ds)
        for h in members:
            (ETCD_DATA_DIR / h).mkdir(parents=True, exist_ok=True)
            os.chmod(ETCD_DATA_DIR / h, 0o700)

        # Migration streams are encrypted in the lab: a CA and a certificate per host.
        from vigil.pki import create_ca, create_host_certs

        self.progress("creating the migration TLS CA and host certificates")
        create_ca(RUN_DIR / "tls-ca")
        for h in hosts:
            create_host_certs(RUN_DIR / "tls-ca", Path(st["hosts"][h]["dir"]) / "tls", h,
                              ips=(st["hosts"][h]["address"],))
        for h in hosts:
            hs = st["hosts"][h]
            _atomic_write_json(Path(hs["agent_config"]), {
                "tls_dir": str(Path(hs["dir"]) / "tls"),
                "host": h, "address": hs["address"], "etcd_endpoints": endpoints,
                "run_dir": str(Path(hs["dir"]) / "run"),
                "datastores": {ds: str(datastore_path(ds)) for ds in dss},
                "watchdog_file": hs["watchdog_file"],
                "isolation_addresses": [subnet.bridge_address],
                "peers": {p: st["hosts"][p]["address"] for p in hosts if p != h},
                "memory_mb": memory_mb, "cpus": cpus, "watchdog_s": cfg.watchdog_timeout_s,
                "networks": {VM_NETWORK: HOST_VM_BRIDGE},
                "cache_dir": str(cache_dir()),
            })
        _atomic_write_json(CLUSTER_FILE, {
            "etcd_endpoints": endpoints, "hosts": {h: st["hosts"][h]["address"] for h in hosts},
            "datastores": {ds: str(datastore_path(ds)) for ds in dss},
            "isolation_addresses": [subnet.bridge_address],
        })
        self.save_state(st)

        # Slow start-up work happens here, once for all hosts, before any watchdog exists:
        # the agents then find the accelerator's answer cached for this boot.
        self.progress("guest image and accelerator probe (once per machine boot)")
        accel = probe_accel(cache_dir(), build_guest_image(progress=self.progress))
        self.progress(f"accelerator: {accel} ({accel_reason(cache_dir())})")
        self.progress(f"starting supervisors (etcd members: {', '.join(members)}; agent: "
                      f"{' '.join(agent_cmd)})")
        for h in hosts:
            self._spawn_supervisor(h)
        for h in hosts:
            pid = self._wait_supervisor(h)
            with self.mutate() as s:
                s["hosts"][h]["supervisor_pid"] = pid
        self.progress(f"waiting for etcd ({', '.join(endpoints)})")
        self.wait_etcd_healthy(timeout=cfg.etcd_timeout_s)
        with self.mutate() as s:
            s["phase"] = "up"
            st = s
        self.progress(f"lab up: {len(hosts)} hosts, {len(dss)} datastores, etcd {','.join(endpoints)}")
        return st

    def wait_etcd_healthy(self, timeout: float = 30.0, members: int | None = None) -> None:
        eps = self.etcd_endpoints
        need = len(eps) if members is None else members

        def ok():
            return sum(etcdmod.health(eps).values()) >= need
        try:
            wait_for(ok, timeout, interval=0.25, what=f"{need} healthy etcd members")
        except LabError as e:
            raise LabError(f"{e}: {etcdmod.health(eps)}") from None

    # --- supervisors -------------------------------------------------------------------
    def _spawn_supervisor(self, host: str) -> None:
        d = host_dir(host)
        d.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (d / SUPERVISOR_STATUS).unlink()
        import vigil
        pkg_root = str(Path(vigil.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        argv = ["setsid", "-f", *host_exec_argv(host, [
            sys.executable, "-m", "vigil.lab.supervisor", "--host", host, "--state", str(STATE_FILE)])]
        with open(d / SUPERVISOR_LOG, "ab") as out:
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd="/",
                           env=env, check=True, timeout=30)

    def _wait_supervisor(self, host: str, timeout: float = 15.0) -> int:
        def started():
            pid = self.supervisor_status(host).get("pid")
            return pid if pid_alive(pid) else None
        try:
            return wait_for(started, timeout, interval=0.05, what=f"{host}'s supervisor")
        except LabError as e:
            raise LabError(f"{e}\n{host} supervisor.log:\n{_tail(host_dir(host) / SUPERVISOR_LOG)}") from None

    def start_supervisor(self, host: str) -> int:
        """(Re)start the host's supervisor, which boots etcd and the agent."""
        self.host(host)
        if self.supervisor_pid(host):
            raise LabError(f"{host}'s supervisor is already running")
        self._spawn_supervisor(host)
        pid = self._wait_supervisor(host)
        with self.mutate() as s:
            s["hosts"][host]["supervisor_pid"] = pid
        return pid

    # --- down --------------------------------------------------------------------------
    def down(self, keep_data: bool = False) -> None:
        """Remove everything the lab created. Idempotent; works after a failed up."""
        st = None
        with contextlib.suppress(LabError):
            st = self.load_state()
        hosts = set((st or {}).get("hosts", {}))
        hosts |= {n[len(NETNS_PREFIX):] for n in net.lab_netns()}
        with contextlib.suppress(OSError):
            hosts |= {p.name for p in MNT_NS_DIR.iterdir()}
        hosts = sorted(hosts)

        # 1. supervisors: SIGTERM, a moment to stop their children
        sups = []
        for h in hosts:
            pid = ((st or {}).get("hosts", {}).get(h, {}).get("supervisor_pid")
                   or self.supervisor_status(h).get("pid"))
            if pid_alive(pid) and pid in pids_in_ns(netns_path(h)):
                sups.append(pid)
        if sups:
            self.progress(f"stopping supervisors {sups}")
            signal_pids(sups, signal.SIGTERM)
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and any(pid_alive(p) for p in sups):
                time.sleep(0.05)
        # 2. every process of every host: netns and mount namespace
        for h in hosts:
            for nsfile, kind in ((netns_path(h), "net"), (mntns_path(h), "mnt")):
                if ns_inode(nsfile) is None:
                    continue
                pids = pids_in_ns(nsfile, kind)
                if pids:
                    self.progress(f"{h}: killing {len(pids)} processes")
                    signal_pids(pids, signal.SIGCONT)
                    kill_ns_processes(nsfile, kind, timeout=10)
        # 3. nftables
        net.delete_nft_table()
        # 4. mounts (root-ns datastores, mount namespace files, the mnt dir), then the
        #    datastores' loop devices (those of the state are among them)
        left = dsmod.unmount_all()
        if left:
            raise LabError(f"could not unmount: {', '.join(left)}")
        loops = dsmod.detach_loop_devices()
        if loops:
            self.progress(f"loop devices {', '.join(loops)} still open: detached when closed")
        # 5. network
        for ns in net.lab_netns():
            self.progress(f"deleting netns {ns}")
            net.delete_host_net(ns)
        for link in net.lab_links():
            if link != BRIDGE:
                run(["ip", "link", "del", link], check=False)
        if net.lab_links():
            self.progress(f"deleting bridge {BRIDGE}")
        net.delete_bridge()
        net.release_netns_dir()
        # 6. files
        dsmod.remove_tree(RUN_DIR)
        if not keep_data:
            dsmod.remove_tree(DATA_DIR)
        else:
            # keep store and etcd data; the mount points are recreated by up
            dsmod.remove_tree(DS_DIR)
        self.progress("lab down")

    def live_processes(self) -> dict[str, list[int]]:
        """Processes still running in the lab's host namespaces (a lab someone is using)."""
        out: dict[str, list[int]] = {}
        for ns in net.lab_netns():
            host = ns[len(NETNS_PREFIX):]
            pids = pids_in_ns(netns_path(host))
            if pids:
                out[host] = pids
        return out

    def clean(self) -> list[str]:
        """Leave the machine as if vigil had never run: every trace of an earlier lab and
        everything vigil caches. Refuses while any lab process runs (that lab is someone's).
        Returns what was removed, for people."""
        live = self.live_processes()
        st = self.load_state() if STATE_FILE.exists() else None
        sups = [h.get("supervisor_pid") for h in (st or {}).get("hosts", {}).values()]
        if live or any(pid_alive(p) for p in sups if p):
            hosts = ", ".join(f"{h} ({len(p)} processes)" for h, p in sorted(live.items())) or "supervisors"
            raise LabError(f"a lab is up ({hosts}); 'vigil lab down' first, if it is yours")
        removed = []
        if (st is not None or net.lab_netns() or net.lab_links() or self._lab_mounts()
                or dsmod.lab_loop_devices() or net.nft_table_exists()):
            removed.append("an earlier lab's namespaces, links, mounts, loop devices")
            self.down()
        for d in (RUN_DIR, DATA_DIR, cache_dir()):
            if d.exists():
                dsmod.remove_tree(d)
                removed.append(str(d))
        return removed

    # --- status ------------------------------------------------------------------------
    def status(self, etcd_timeout: float = 1.0) -> dict:
        st = self.load_state()
        if st is None:
            return {"up": False, "state_file": str(STATE_FILE),
                    "leftovers": {"netns": net.lab_netns(), "links": net.lab_links(),
                                  "mounts": self._lab_mounts(),
                                  "nft_table": net.nft_table_exists()}}
        faults = st.get("faults", [])
        hosts = {}
        for h, hs in st["hosts"].items():
            sup = self.supervisor_status(h)
            ns_alive = netns_path(h).exists()
            netpids = pids_in_ns(netns_path(h)) if ns_alive else []

            def live(key):
                p = sup.get(key)
                return p if p and p in netpids and pid_alive(p) else None
            hosts[h] = {
                "address": hs["address"], "netns": hs["netns"], "netns_alive": ns_alive,
                "link_up": net.link_is_up(h),
                "supervisor_pid": live("pid"), "state": sup.get("state") if live("pid") else "off",
                "agent_pid": live("agent_pid"), "etcd_pid": live("etcd_pid"),
                "etcd_member": hs["etcd_member"], "resets": sup.get("resets", 0),
                "boots": sup.get("boots", 0), "watchdog_armed": sup.get("watchdog_armed", False),
                "processes": len(netpids),
                "faults": [f for f in faults if h in _fault_hosts(f)],
            }
        eps = st["etcd"]["endpoints"]
        return {
            "up": self._alive(st), "phase": st.get("phase"), "subnet": st["subnet"],
            "bridge": st["bridge"] | {"exists": net.link_exists(BRIDGE)},
            "hosts": hosts,
            "datastores": {ds: d | self._datastore_faults(faults, ds)
                           for ds, d in st["datastores"].items()},
            "etcd": {"endpoints": eps, "health": etcdmod.health(eps, etcd_timeout)},
            "faults": faults,
            "config": st["config"],
        }

    @staticmethod
    def _datastore_faults(faults: list[dict], ds: str) -> dict:
        return {"lost_on": sorted(f["host"] for f in faults
                                  if f["kind"] == "datastore_loss" and f["ds"] == ds),
                "failed": any(f["kind"] == "datastore_fail" and f["ds"] == ds for f in faults)}

    def log_tails(self) -> str:
        """The last lines of every host's supervisor, etcd and agent logs: what an error
        about the lab should show (they are gone once the lab is down)."""
        out = []
        with contextlib.suppress(OSError):
            for d in sorted(HOSTS_DIR.iterdir()):
                for name in (SUPERVISOR_LOG, ETCD_LOG, AGENT_LOG):
                    t = _tail(d / name, 8)
                    if t:
                        out.append(f"--- {d.name}/{name}\n{t}")
        return ("\n" + "\n".join(out)) if out else ""


def _fault_hosts(f: dict) -> list[str]:
    """The hosts a fault is on: none for a datastore_fail (it hits the datastore)."""
    if f["kind"] == "partition":
        return list(f["a"]) + list(f["b"])
    return [f["host"]] if "host" in f else []


# silence "imported but unused" for names re-exported for the CLI
_ = (ETCD_DOWN_FLAG, LabCommandError)
