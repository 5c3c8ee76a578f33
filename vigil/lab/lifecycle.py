"""Bringing the lab up and taking it down (see DESIGN.md, "The lab")."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

from vigil.config import cache_dir
from vigil.hypervisor.accel import probe_accel, reason as accel_reason

from . import datastores as dsmod
from . import etcd as etcdmod
from . import lab_cluster, net, preflight
from vigil.hypervisor.guest_image import build_guest_image
from .host_processes import HostProcesses
from .lab_config import LabConfig, _machine_memory_mb, default_agent_command
from .lab_state import STATE_VERSION, _atomic_write_json
from . import api_servers
from . import bmc
from .api_servers import AGENT_METRICS_PORT
from .layout import (AGENT_LOG, BRIDGE, CLUSTER_FILE, DATA_DIR, DS_DIR, HOST_VM_BRIDGE,
                     VM_NETWORK, ETCD_DATA_DIR, ETCD_LOG, HOSTS_DIR, MNT_NS_DIR, NETNS_PREFIX,
                     RUN_DIR, STATE_FILE, STORE_DIR, SUPERVISOR_LOG, WATCHDOG_FILE, LabError,
                     datastore_path, host_dir, host_name, image_path, kill_ns_processes,
                     mntns_path, netns_name, netns_path, ns_inode, pid_alive, pids_in_ns, run,
                     signal_pids, store_path, veth_name, wait_for)


class LabLifecycle(HostProcesses):
    """up() and down(): the lab's namespaces, links, datastores, etcd and supervisors."""

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
        # The cluster directory first: every host's configuration, certificates and (for a
        # member) etc/default/etcd, as `vigil cluster init` / `add-host` make them.
        addresses = {h: subnet.host_address(i) for i, h in enumerate(hosts, 1)}
        cluster = lab_cluster.build(addresses, list(members))
        vigil_bin = str(Path(sys.executable).parent / "vigil")
        for i, h in enumerate(hosts, 1):
            d = host_dir(h)
            addr = addresses[h]
            config = lab_cluster.config_path(cluster, h)
            st["hosts"][h] = {
                "index": i, "address": addr, "netns": netns_name(h), "veth": veth_name(h),
                "mntns": str(mntns_path(h)), "dir": str(d),
                "agent_config": str(config), "watchdog_file": str(d / WATCHDOG_FILE),
                "agent_log": str(d / AGENT_LOG), "etcd_log": str(d / ETCD_LOG),
                "supervisor_log": str(d / SUPERVISOR_LOG),
                "etcd_member": h in members,
                # the member runs from its etc/default/etcd, as Debian's etcd.service does
                "etcd_argv": [etcdmod.etcd_binary()] if h in members else None,
                "etcd_env_file": str(lab_cluster.etcd_defaults(cluster, h)) if h in members else None,
                "agent_argv": [a.format(config=config, host=h, python=sys.executable,
                                        watchdog=d / WATCHDOG_FILE) for a in agent_cmd],
                # the API server of each host (a supervisor child): [api] and [etcd] of its vigil.toml
                "api_argv": [vigil_bin, "api", "--config", str(config)],
                "api_log": str(d / api_servers.API_LOG),
                "supervisor_pid": None,
            }
        st["etcd"]["tls"] = lab_cluster.operator_tls(cluster)
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

        if cfg.fencing:
            self.progress(f"BMC emulators: Redfish and IPMI for every host on {subnet.bridge_address} "
                          f"(hosts fenced over {cfg.fencing})")
            bmc.prepare(cluster.ca_dir, subnet.bridge_address)
        for h in hosts:
            hs = st["hosts"][h]
            fence = (bmc.device(cfg.fencing, subnet.bridge_address, hs["index"], str(cluster.ca_dir / "ca-cert.pem"))
                     if cfg.fencing else {})
            lab_cluster.write_agent_config(
                cluster, h, run_dir=str(Path(hs["dir"]) / "run"),
                datastores={ds: str(datastore_path(ds)) for ds in dss},
                watchdog_file=hs["watchdog_file"],
                isolation_addresses=(subnet.bridge_address,),
                memory_mb=memory_mb, cpus=cpus, watchdog_s=cfg.watchdog_timeout_s,
                networks={VM_NETWORK: HOST_VM_BRIDGE},
                cache_dir=str(cache_dir()),
                metrics_listen=f"{hs['address']}:{AGENT_METRICS_PORT}",
                **fence,
            )
        _atomic_write_json(CLUSTER_FILE, {
            "etcd_endpoints": endpoints, "hosts": {h: st["hosts"][h]["address"] for h in hosts},
            "datastores": {ds: str(datastore_path(ds)) for ds in dss},
            "isolation_addresses": [subnet.bridge_address],
            "etcd_tls": st["etcd"]["tls"],
        })
        self.save_state(st)

        # Slow start-up work happens here, once for all hosts, before any watchdog exists:
        # the agents then find the accelerator's answer cached for this boot.
        self.progress("guest image and accelerator probe (once per machine boot)")
        accel = probe_accel(cache_dir(), build_guest_image(progress=self.progress))
        self.progress(f"accelerator: {accel} ({accel_reason(cache_dir())})")
        if cfg.fencing:
            st["bmc_pid"] = bmc.start()
            self.save_state(st)
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
        urls = [api_servers.url(st["hosts"][h]["address"]) for h in hosts]
        api = api_servers.bootstrap(cluster, urls)
        self.progress(f"waiting for the API ({', '.join(urls)})")
        api_servers.wait_healthy(urls, api["ca"], timeout=cfg.etcd_timeout_s + 30)
        with self.mutate() as s:
            s["phase"] = "up"
            st = s
        self.progress(f"lab up: {len(hosts)} hosts, {len(dss)} datastores, etcd {','.join(endpoints)}")
        self.progress(f"API and dashboard: {urls[0]}/ (user {api['user']}, password {api['password']}; "
                      f"CA {api['ca']})")
        return st

    def wait_etcd_healthy(self, timeout: float = 30.0, members: int | None = None) -> None:
        eps = self.etcd_endpoints
        need = len(eps) if members is None else members

        def ok():
            return sum(etcdmod.health(eps, tls=self.etcd_tls).values()) >= need
        try:
            wait_for(ok, timeout, interval=0.25, what=f"{need} healthy etcd members")
        except LabError as e:
            raise LabError(f"{e}: {etcdmod.health(eps, tls=self.etcd_tls)}") from None

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

        # 0. the BMC emulators (root namespace): before the hosts they could power on
        bmc.stop()
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
