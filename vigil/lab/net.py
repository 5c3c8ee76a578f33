"""Lab network: one netns per host, a veth to the bridge `vigilbr0`, nftables drops.

Plain `ip` and `nft` through subprocess. `tc netem` does not exist on the lab kernels, so
faults are link down and drops on the bridge (nftables `bridge` family, no br_netfilter
needed: the rules see the frames switched between bridge ports).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from typing import Iterable

from .layout import (BRIDGE, BRIDGE_HOST_INDEX, HOST_IFNAME, HOST_VM_BRIDGE, HOST_VM_IFNAME, NETNS_DIR,
                     NETNS_PREFIX, NFT_FAMILY, NFT_TABLE, VETH_PREFIX, VM_BRIDGE, VM_SUBNET, VM_VETH_PREFIX,
                     LabError, netns_name, netns_path, run, veth_name, vm_veth_name, wait_for)


class Subnet:
    """Addresses of the lab: host i is .i, the bridge (isolation address) is .254."""

    def __init__(self, cidr: str):
        self.net = ipaddress.IPv4Network(cidr, strict=True)
        if self.net.num_addresses < 256:
            raise LabError(f"lab subnet {cidr} must be a /24 or larger")
        self.prefixlen = self.net.prefixlen

    def host_address(self, i: int) -> str:
        if not 1 <= i < BRIDGE_HOST_INDEX:
            raise LabError(f"host index {i} out of range")
        return str(self.net.network_address + i)

    @property
    def bridge_address(self) -> str:
        return str(self.net.network_address + BRIDGE_HOST_INDEX)


def link_exists(name: str, netns: str | None = None) -> bool:
    argv = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", "dev", name]
    return run(argv, check=False).returncode == 0


def lab_links() -> list[str]:
    """Root-namespace links that the lab created (the bridge and the vgl-h* veths)."""
    out = run(["ip", "-j", "link", "show"], check=False).stdout or "[]"
    names = [link["ifname"] for link in json.loads(out)]
    return [n for n in names if n in (BRIDGE, VM_BRIDGE) or n.startswith((VETH_PREFIX, VM_VETH_PREFIX))]


def lab_netns() -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(NETNS_PREFIX))
    except FileNotFoundError:
        return []


def create_bridge(address: str, prefixlen: int) -> None:
    if not link_exists(BRIDGE):
        run(["ip", "link", "add", BRIDGE, "type", "bridge", "stp_state", "0",
             "forward_delay", "0"])
    run(["ip", "addr", "replace", f"{address}/{prefixlen}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def create_host_net(host: str, address: str, prefixlen: int) -> None:
    ns, veth = netns_name(host), veth_name(host)
    if not netns_path(host).exists():
        run(["ip", "netns", "add", ns])
    if link_exists(veth):
        run(["ip", "link", "del", veth])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", HOST_IFNAME, "netns", ns])
    run(["ip", "link", "set", veth, "master", BRIDGE])
    run(["ip", "link", "set", veth, "up"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", ns, "addr", "add", f"{address}/{prefixlen}", "dev", HOST_IFNAME])
    run(["ip", "-n", ns, "link", "set", HOST_IFNAME, "up"])


def vm_bridge_address() -> str:
    """The root namespace's address on the VM network (where tests' clients talk from)."""
    return str(ipaddress.IPv4Network(VM_SUBNET).network_address + BRIDGE_HOST_INDEX)


def vm_address(i: int) -> str:
    """The ``i``-th lab guest address on the VM network, with its prefix (``vigil.ip=``)."""
    net = ipaddress.IPv4Network(VM_SUBNET)
    if not 1 <= i < BRIDGE_HOST_INDEX:
        raise LabError(f"VM address index {i} out of range")
    return f"{net.network_address + i}/{net.prefixlen}"


def create_vm_bridge() -> None:
    """The root end of the VM network: a bridge the hosts' VM bridges hang off."""
    if not link_exists(VM_BRIDGE):
        run(["ip", "link", "add", VM_BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
    run(["ip", "addr", "replace", f"{vm_bridge_address()}/{ipaddress.IPv4Network(VM_SUBNET).prefixlen}",
         "dev", VM_BRIDGE])
    run(["ip", "link", "set", VM_BRIDGE, "up"])


def create_host_vmnet(host: str) -> None:
    """The host's VM bridge (where the agent plugs its VMs' taps) and its uplink."""
    ns, veth = netns_name(host), vm_veth_name(host)
    if link_exists(veth):
        run(["ip", "link", "del", veth])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", HOST_VM_IFNAME, "netns", ns])
    run(["ip", "link", "set", veth, "master", VM_BRIDGE])
    run(["ip", "link", "set", veth, "up"])
    run(["ip", "-n", ns, "link", "add", HOST_VM_BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
    run(["ip", "-n", ns, "link", "set", HOST_VM_IFNAME, "master", HOST_VM_BRIDGE])
    run(["ip", "-n", ns, "link", "set", HOST_VM_IFNAME, "up"])
    run(["ip", "-n", ns, "link", "set", HOST_VM_BRIDGE, "up"])


def set_link(host: str, up: bool, wait: bool = True) -> None:
    """Root side of the host's veth up or down (the host's eth0 loses carrier). Bringing
    it up waits (by default) until both ends are operationally up and the bridge port
    forwards: the kernel applies carrier changes up to a second later (linkwatch)."""
    run(["ip", "link", "set", veth_name(host), "up" if up else "down"])
    if up and wait:
        wait_for(lambda: link_operational(host), 5, interval=0.05,
                 what=f"{host}'s link to come up")


def flush_unresolved_neighbors(hosts: Iterable[str]) -> None:
    """Forget ARP entries that failed while a link was down or a partition dropped frames
    (INCOMPLETE/FAILED), in the hosts and on the bridge, so that traffic resumes at once
    after a heal instead of at the next ARP retransmit (up to a second later)."""
    for h in hosts:
        if (NETNS_DIR / netns_name(h)).exists():
            run(["ip", "-n", netns_name(h), "neigh", "flush", "dev", HOST_IFNAME,
                 "nud", "incomplete", "nud", "failed"], check=False)
    if link_exists(BRIDGE):
        run(["ip", "neigh", "flush", "dev", BRIDGE, "nud", "incomplete", "nud", "failed"],
            check=False)


def _operstate(argv: list[str]) -> str | None:
    out = run(argv, check=False)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)[0].get("operstate")


def link_operational(host: str) -> bool:
    veth = veth_name(host)
    if _operstate(["ip", "-j", "link", "show", "dev", veth]) != "UP":
        return False
    if _operstate(["ip", "-n", netns_name(host), "-j", "link", "show", "dev", HOST_IFNAME]) != "UP":
        return False
    out = run(["bridge", "-j", "link", "show", "dev", veth], check=False)
    if out.returncode != 0 or not out.stdout.strip():
        return True   # no bridge tool output: operstate is the best we have
    ports = json.loads(out.stdout)
    return all(p.get("state", "forwarding") == "forwarding" for p in ports)


def link_is_up(host: str) -> bool:
    out = run(["ip", "-j", "link", "show", "dev", veth_name(host)], check=False)
    if out.returncode != 0:
        return False
    return "UP" in json.loads(out.stdout)[0].get("flags", [])


def delete_host_net(host_ns: str) -> None:
    """Delete a host's veth (both ends, synchronously) and its netns."""
    host = host_ns[len(NETNS_PREFIX):]
    try:
        veth = veth_name(host)
    except ValueError:
        veth = None
    if veth and link_exists(veth):
        run(["ip", "link", "del", veth], check=False)
    with contextlib.suppress(ValueError):
        if link_exists(vm_veth_name(host)):
            run(["ip", "link", "del", vm_veth_name(host)], check=False)
    if (NETNS_DIR / host_ns).exists():
        run(["ip", "netns", "del", host_ns], check=False)
    if veth:
        wait_for(lambda: not link_exists(veth), 10, what=f"{veth} to vanish")


def release_netns_dir() -> None:
    """`ip netns add` made /run/netns a mount point; once no namespace is left in it
    (ours are gone and nobody else has one), unmount it again."""
    from .layout import read_mounts
    try:
        if os.listdir(NETNS_DIR):
            return
    except FileNotFoundError:
        return
    if str(NETNS_DIR) in read_mounts():
        run(["umount", str(NETNS_DIR)], check=False)


def delete_bridge() -> None:
    for b in (BRIDGE, VM_BRIDGE):
        if link_exists(b):
            run(["ip", "link", "del", b])


# --- partitions: nftables bridge table ---------------------------------------------------
def apply_partitions(partitions: Iterable[tuple[Iterable[str], Iterable[str]]]) -> None:
    """Make the `vigil_lab` bridge table drop every frame between the two groups of each
    partition (both directions, ARP included). An empty list deletes the table."""
    partitions = [(sorted(a), sorted(b)) for a, b in partitions]
    delete_nft_table()
    if not partitions:
        return
    lines = [f"table {NFT_FAMILY} {NFT_TABLE} {{",
             "  chain forward {",
             "    type filter hook forward priority filter; policy accept;"]
    for a, b in partitions:
        sa = ", ".join(veth_name(h) for h in a)
        sb = ", ".join(veth_name(h) for h in b)
        lines.append(f"    iifname {{ {sa} }} oifname {{ {sb} }} counter drop")
        lines.append(f"    iifname {{ {sb} }} oifname {{ {sa} }} counter drop")
    lines += ["  }", "}"]
    run(["nft", "-f", "-"], input="\n".join(lines) + "\n")


def nft_table_exists() -> bool:
    return run(["nft", "list", "table", NFT_FAMILY, NFT_TABLE], check=False).returncode == 0


def delete_nft_table() -> None:
    if nft_table_exists():
        run(["nft", "delete", "table", NFT_FAMILY, NFT_TABLE])
