"""Setting up lab scenarios: wait for the cluster, create VMs of the lab guest image."""
from __future__ import annotations

import time
from typing import Callable

from vigil import service
from vigil.lab import observe
from vigil.hypervisor.guest_image import build_guest_image
from vigil.lab.layout import VM_NETWORK
from vigil.model import BootSpec, DiskSpec, VMSpec


def wait_cluster_ready(hosts: int, timeout: float = 90) -> dict:
    def ready() -> dict | None:
        c = observe.cluster()
        up = [h for h in c["hosts"] if h["lease"] and h["datastores"]]
        return c if len(up) >= hosts and c["leader"] else None

    return observe.wait_for(f"{hosts} hosts with leases and a leader", ready, timeout)


def lab_vm_spec(name: str, *, priority: str = "medium", isolation: str = "power-off", workload: bool = False,
                memory_mb: int = 128, datastore: str = "ds1", disk_mb: int = 64, dirty_mb: int = 0,
                ip: str = "") -> VMSpec:
    """The lab guest; with ``ip`` (ADDR/PREFIX on the lab's VM network) it has a NIC there
    and answers on TCP port 7000 (see vigil/hypervisor/guest/init)."""
    img = build_guest_image(progress=lambda m: None)
    cmdline = img.cmdline + (" vigil.workload=1" if workload else "") + (f" vigil.dirty_mb={dirty_mb}" if dirty_mb else "")
    cmdline += f" vigil.ip={ip}" if ip else ""
    return VMSpec(
        networks=(VM_NETWORK,) if ip else (),
        name=name, memory_mb=memory_mb, vcpus=1,
        disks=(DiskSpec(name="disk0", datastore=datastore, path=f"{name}/disk0.qcow2", size_mb=disk_mb),),
        boot=BootSpec(kernel=str(img.kernel), initrd=str(img.initrd), cmdline=cmdline),
        restart_priority=priority, isolation_response=isolation,
    )


def create_lab_vms(
    names: list[str],
    hosts: list[str],
    priorities: list[str] | None = None,
    isolation: str = "power-off",
    workload: bool = False,
    stagger_s: float = 1.0,
    memory_mb: int = 128,
    dirty_mb: int = 0,
    progress: Callable[[str], None] = lambda m: None,
    ips: list[str] | None = None,
) -> None:
    """Create VMs spread round-robin over ``hosts``, a little apart (boot storms cost TCG
    dearly); ``ips``: each VM's address on the lab's VM network (a NIC there)."""
    for i, name in enumerate(names):
        spec = lab_vm_spec(name, priority=(priorities or ["medium"] * len(names))[i], isolation=isolation,
                           workload=workload, memory_mb=memory_mb, dirty_mb=dirty_mb,
                           ip=(ips or [""] * len(names))[i])
        host = hosts[i % len(hosts)]
        observe.call(lambda s: service.create_vm(s, spec, host))
        progress(f"created {name} on {host} (priority {spec.restart_priority})")
        time.sleep(stagger_s)
