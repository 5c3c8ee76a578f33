"""How a live migration is done (MigrationPolicy and its presets), what it reports
(progress, result, errors), and the capabilities and parameters that set it on QEMU
(see vigil.hypervisor.migration)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from vigil.hypervisor.qemu import TLS_CLIENT_ID, TLS_SERVER_ID, QemuError, QMPConn

MiB = 1024 * 1024
UNLIMITED_BANDWIDTH = 1 << 40  # bytes/s; QEMU has no "off" for max-bandwidth
QEMU_DEFAULT_BANDWIDTH_MIB_S = 128
QEMU_DEFAULT_DOWNTIME_MS = 300


class MigrationFailed(QemuError):
    """The migration did not complete. Unless ``postcopy`` is set the VM runs on the source
    and the destination QEMU is to be quit (it exits by itself on most failures).
    ``postcopy``: post-copy had been asked for, so part of the VM's memory may be on the
    destination only and the source's copy must never run again (a QMP error that ends
    the migration loop carries the same attribute)."""

    def __init__(self, message: str, postcopy: bool = False) -> None:
        super().__init__(message)
        self.postcopy = postcopy


class MigrationCancelled(MigrationFailed):
    """The migration was cancelled (by request, a stall or a timeout); the source runs on."""


@dataclass(frozen=True)
class MigrationPolicy:
    """How to migrate. Every field is applied on each migration (QEMU keeps parameters
    between migrations, so nothing is left from a previous one)."""

    downtime_limit_ms: int = 30
    auto_converge: bool = True
    # post-copy as the fallback when pre-copy does not converge (postcopy-ram on both sides)
    postcopy_fallback: bool = True
    # start post-copy after this many dirty-sync passes, or when the remaining RAM after a
    # pass did not shrink by 10 % (from pass 3 on), or after postcopy_after_s seconds
    postcopy_after_passes: int = 5
    postcopy_after_s: float = 8.0
    max_bandwidth_mib_s: float | None = None  # None: no cap
    stall_timeout_s: float = 10.0  # no transferred byte for that long: cancel
    total_timeout_s: float | None = 600.0  # cancel after that long (not once post-copy runs)
    tls: bool = False
    tls_hostname: str | None = None  # default: the host of the URI
    multifd_channels: int = 0  # 0: off. Under TCG on 2 cores it did not help (bench/migration.py)
    poll_interval_s: float = 0.1


# What QEMU does when nothing is set (plain `migrate`): 128 MiB/s, 300 ms, no capabilities.
QEMU_DEFAULTS = MigrationPolicy(
    downtime_limit_ms=QEMU_DEFAULT_DOWNTIME_MS, auto_converge=False, postcopy_fallback=False,
    max_bandwidth_mib_s=QEMU_DEFAULT_BANDWIDTH_MIB_S, stall_timeout_s=30.0, total_timeout_s=60.0,
)
# What plain `virsh migrate --live` sets: libvirt lifts the bandwidth cap, nothing else.
LIBVIRT_DEFAULTS = replace(QEMU_DEFAULTS, max_bandwidth_mib_s=None)
VIGIL_POLICY = MigrationPolicy()


@dataclass(frozen=True)
class MigrationProgress:
    status: str  # setup, active, postcopy-active, pre-switchover, device, completed, ...
    elapsed_s: float
    transferred: int  # bytes of RAM sent so far
    remaining: int  # bytes of RAM still dirty
    total: int  # guest RAM bytes
    passes: int  # dirty-sync-count
    dirty_rate: float  # bytes/s the guest dirties
    expected_downtime_ms: int | None
    mbps: float  # current throughput, Mbit/s as QEMU reports it
    postcopy: bool
    throttle_pct: int = 0  # auto-converge's vCPU throttle


@dataclass(frozen=True)
class MigrationResult:
    downtime_ms: int
    total_time_ms: int
    setup_time_ms: int
    ram_transferred: int
    ram_total: int
    postcopy: bool
    passes: int
    mbps: float
    switchover_hook_ms: float = 0.0  # time spent in before_switchover (inside the downtime)
    disk_bytes: int = 0  # shared-nothing: bytes the disk mirrors copied to READY
    postcopy_reason: str = ""  # why post-copy was started


def progress_from(info: dict[str, Any], elapsed: float, postcopy: bool) -> MigrationProgress:
    ram = info.get("ram") or {}
    page = int(ram.get("page-size", 4096) or 4096)
    status = str(info.get("status", "none"))
    return MigrationProgress(
        status=status,
        elapsed_s=elapsed,
        transferred=int(ram.get("transferred", 0)),
        remaining=int(ram.get("remaining", 0)),
        total=int(ram.get("total", 0)),
        passes=int(ram.get("dirty-sync-count", 0)),
        dirty_rate=float(ram.get("dirty-pages-rate", 0)) * page,
        expected_downtime_ms=info.get("expected-downtime"),
        mbps=float(ram.get("mbps", 0.0)),
        postcopy=postcopy or status.startswith("postcopy"),
        throttle_pct=int(info.get("cpu-throttle-percentage", 0) or 0),
    )


# ---------------------------------------------------------------------------------------
# capabilities and parameters


async def set_caps(conn: QMPConn, caps: dict[str, bool]) -> None:
    await conn.execute("migrate-set-capabilities", {
        "capabilities": [{"capability": k, "state": v} for k, v in caps.items()],
    })


async def _configure(conn: QMPConn, policy: MigrationPolicy, role: str, uri: str,
                     pause_before_switchover: bool = False) -> None:
    multifd = policy.multifd_channels > 0
    caps = {"events": True, "postcopy-ram": policy.postcopy_fallback, "multifd": multifd}
    if role == "source":
        caps["auto-converge"] = policy.auto_converge
        caps["pause-before-switchover"] = pause_before_switchover
    await set_caps(conn, caps)
    params: dict[str, Any] = {"tls-creds": "", "tls-hostname": ""}
    if policy.tls:
        params["tls-creds"] = TLS_CLIENT_ID if role == "source" else TLS_SERVER_ID
        if role == "source" and policy.tls_hostname:
            params["tls-hostname"] = policy.tls_hostname
    if multifd:
        params["multifd-channels"] = policy.multifd_channels
    if role == "source":
        bw = UNLIMITED_BANDWIDTH if policy.max_bandwidth_mib_s is None else int(policy.max_bandwidth_mib_s * MiB)
        params.update({
            "downtime-limit": int(policy.downtime_limit_ms),
            "max-bandwidth": bw,
            "max-postcopy-bandwidth": 0 if policy.max_bandwidth_mib_s is None else bw,
        })
    await conn.execute("migrate-set-parameters", params)


async def prepare_incoming(dest: QMPConn, listen_uri: str, policy: MigrationPolicy = VIGIL_POLICY) -> None:
    """Destination side: set capabilities/parameters and listen on ``listen_uri``
    (e.g. ``tcp:127.0.0.1:4444``). ``dest`` runs with ``-incoming defer`` (``inmigrate``)."""
    status = await dest.status()
    if status != "inmigrate":
        raise MigrationFailed(f"VM {dest.name}: destination is {status!r}, not waiting for a migration "
                              "(start it with incoming=True)")
    await _configure(dest, policy, "destination", listen_uri)
    await dest.execute("migrate-incoming", {"uri": listen_uri})
