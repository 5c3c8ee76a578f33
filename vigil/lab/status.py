"""What `vigil lab status` shows: hosts, processes, datastores, etcd health and faults."""

from __future__ import annotations

from . import etcd as etcdmod
from . import net
from .host_processes import HostProcesses
from . import api_servers
from .layout import BRIDGE, STATE_FILE, netns_path, pid_alive, pids_in_ns


class LabStatus(HostProcesses):
    """status(): the lab as it is now, for people and tests."""

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
                "agent_pid": live("agent_pid"), "etcd_pid": live("etcd_pid"), "api_pid": live("api_pid"),
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
            "etcd": {"endpoints": eps, "health": etcdmod.health(eps, etcd_timeout, self.etcd_tls)},
            "faults": faults,
            "config": st["config"],
            "api": api_servers.read(),
        }

    @staticmethod
    def _datastore_faults(faults: list[dict], ds: str) -> dict:
        return {"lost_on": sorted(f["host"] for f in faults
                                  if f["kind"] == "datastore_loss" and f["ds"] == ds),
                "failed": any(f["kind"] == "datastore_fail" and f["ds"] == ds for f in faults)}


def _fault_hosts(f: dict) -> list[str]:
    """The hosts a fault is on: none for a datastore_fail (it hits the datastore)."""
    if f["kind"] == "partition":
        return list(f["a"]) + list(f["b"])
    return [f["host"]] if "host" in f else []
