"""Removing every trace of vigil from the machine (`vigil lab clean`)."""

from __future__ import annotations

from vigil.config import cache_dir

from . import datastores as dsmod
from . import net
from .lifecycle import LabLifecycle
from .layout import DATA_DIR, NETNS_PREFIX, RUN_DIR, STATE_FILE, LabError, netns_path, pid_alive, pids_in_ns


class LabClean(LabLifecycle):
    """clean(): the lab down and vigil's caches gone, unless a lab is in use."""

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
