"""Live migration (vMotion) of a running VM between two QEMUs.

The destination QEMU is started with the same VM spec and ``-incoming defer``
(``qemu.start(..., incoming=True)``); it waits in run state ``inmigrate``.
:func:`prepare_incoming` sets its capabilities and parameters and listens
(``migrate-incoming``); :func:`migrate` then drives the source: capabilities and
parameters, ``migrate``, a ``query-migrate`` poll that reports progress, switches to
post-copy when pre-copy does not converge, and cancels on request, on a stall or on the
total timeout. On success the source is ``postmigrate`` (paused, to be quit by the caller)
and the destination ``running``; on cancel or failure the source runs on.

Why vigil's :class:`MigrationPolicy` and not QEMU's defaults (figures from this lab, TCG,
a 512 MiB guest dirtying ~126 MiB/s): QEMU caps migration at 128 MiB/s by default, so such
a guest never converges; without the cap it moves in about a second. When the link is the
bottleneck after all, auto-converge throttles the guest's vCPUs (11-17 s in the lab) and
post-copy switches over at once and fetches the rest on demand (2.3 s, 1-3 ms downtime).
Post-copy has a price: once it runs, the VM's state is split between both hosts and the
migration cannot be cancelled; a lost link pauses it (``postcopy-paused``) until
``migrate-recover`` on the destination and ``migrate`` with ``resume`` on the source. So
vigil starts post-copy only when pre-copy is seen not to converge.

A migration whose connection stops moving does not fail by itself: QEMU waits forever. The
poll watches the transferred bytes and cancels after ``stall_timeout_s`` without progress.

TLS: :func:`vigil.pki.create_ca` / :func:`vigil.pki.create_host_certs` write the files QEMU's
``tls-creds-x509`` reads; ``qemu.start(..., tls_dir=...)`` (or :func:`ensure_tls_objects`
on a running QEMU) creates the ``vigil-tls-server`` and ``vigil-tls-client`` objects, and
``MigrationPolicy(tls=True)`` makes the destination listen with the server creds and the
source connect with the client creds (both sides verify the other's certificate).

Shared-nothing migration (no common datastore): :func:`migrate_shared_nothing` exports the
destination's new empty disks over NBD, mirrors the source's disks into them
(``vigil.hypervisor.mirror``), migrates the memory with ``pause-before-switchover`` and
ends the mirrors while the source is stopped, so the destination resumes on complete disks.
"""
from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, Callable

from vigil.hypervisor import mirror as M
from vigil.hypervisor.qemu import TLS_CLIENT_ID, TLS_SERVER_ID, QemuError, QMPConn

MiB = 1024 * 1024
UNLIMITED_BANDWIDTH = 1 << 40  # bytes/s; QEMU has no "off" for max-bandwidth
QEMU_DEFAULT_BANDWIDTH_MIB_S = 128
QEMU_DEFAULT_DOWNTIME_MS = 300


class MigrationFailed(QemuError):
    """The migration did not complete. Unless the message says otherwise the VM runs on the
    source and the destination QEMU is to be quit (it exits by itself on most failures)."""


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


# ---------------------------------------------------------------------------------------
# the source's migration loop


class _PostcopyJudge:
    """Decides when pre-copy has stopped converging."""

    def __init__(self, policy: MigrationPolicy) -> None:
        self.policy = policy
        self.after_pass: dict[int, int] = {}  # pass number -> remaining right after it

    def __call__(self, p: MigrationProgress) -> str | None:
        if p.status != "active" or p.passes < 1:
            return None
        self.after_pass.setdefault(p.passes, p.remaining)
        if p.passes >= self.policy.postcopy_after_passes:
            return f"{p.passes} passes"
        prev, cur = self.after_pass.get(p.passes - 1), self.after_pass.get(p.passes)
        if p.passes >= 3 and prev is not None and cur is not None and cur > 0.9 * prev:
            return f"pass {p.passes} left {cur // MiB} MiB dirty, pass {p.passes - 1} {prev // MiB} MiB"
        if p.elapsed_s >= self.policy.postcopy_after_s:
            return f"not converged after {p.elapsed_s:.1f}s"
        return None


async def migrate(
    src: QMPConn,
    uri: str,
    policy: MigrationPolicy = VIGIL_POLICY,
    progress: Callable[[MigrationProgress], None] | None = None,
    cancel: asyncio.Event | None = None,
    *,
    before_switchover: Callable[[], Awaitable[None]] | None = None,
) -> MigrationResult:
    """Migrate the VM behind ``src`` to the destination listening on ``uri``.

    ``before_switchover`` (optional) runs while the source VM is stopped, right before its
    device state is sent (QEMU's ``pause-before-switchover``): the place to finish disk
    mirrors. Raises MigrationCancelled (``cancel`` set, stall, total timeout) or
    MigrationFailed; in both cases the source runs on (as it did before), except after
    post-copy started, which the message says.
    """
    st = await src.status()
    if st not in ("running", "paused"):
        raise MigrationFailed(f"VM {src.name}: cannot migrate a VM in state {st!r}")
    was_running = st == "running"
    await _configure(src, policy, "source", uri, pause_before_switchover=before_switchover is not None)
    judge = _PostcopyJudge(policy)
    postcopy = False
    why: str | None = None
    hook_ms = 0.0
    hook_done = False
    t0 = time.monotonic()
    last_xfer, last_move = -1, t0
    unanswered = 0
    with src.listener("MIGRATION") as events:
        await src.execute("migrate", {"uri": uri})
        while True:
            try:
                info = await src.execute("query-migrate", timeout=policy.stall_timeout_s)
                unanswered = 0
            except QemuError as e:
                # QEMU's main loop is blocked: a write to a cut link at the switchover holds
                # it (and keeps the guest stopped) until TCP gives up, many minutes later
                unanswered += 1
                if "timed out" not in str(e) or unanswered > 3:
                    raise MigrationFailed(f"VM {src.name}: QEMU does not answer during the migration: {e}") from None
                await asyncio.to_thread(abort_connection, uri)
                continue
            now = time.monotonic()
            p = progress_from(info, now - t0, postcopy)
            if progress is not None:
                progress(p)
            if p.status == "completed":
                ram = info.get("ram") or {}
                return MigrationResult(
                    downtime_ms=int(info.get("downtime", 0)), total_time_ms=int(info.get("total-time", 0)),
                    setup_time_ms=int(info.get("setup-time", 0)), ram_transferred=int(ram.get("transferred", 0)),
                    ram_total=int(ram.get("total", 0)), postcopy=postcopy, passes=p.passes,
                    mbps=float(ram.get("mbps", 0.0)), switchover_hook_ms=hook_ms, postcopy_reason=why or "",
                )
            if p.status in ("failed", "cancelled"):
                raise MigrationFailed(f"VM {src.name}: migration {p.status}: {info.get('error-desc', 'no reason given')}")
            if p.status == "pre-switchover" and hook_done:
                pass  # migrate-continue given, the migration thread has not moved on yet
            elif p.status == "pre-switchover":
                hook_done = True
                th = time.monotonic()
                try:
                    assert before_switchover is not None
                    await before_switchover()
                except BaseException as e:
                    await _cancel(src, was_running, f"switchover step failed: {e}")
                    raise
                hook_ms = (time.monotonic() - th) * 1000
                await src.execute("migrate-continue", {"state": "pre-switchover"})
                continue
            if p.transferred != last_xfer or p.status in ("device", "pre-switchover"):
                last_xfer, last_move = p.transferred, now
            reason = None
            if cancel is not None and cancel.is_set():
                reason = "cancelled by request"
            elif now - last_move > policy.stall_timeout_s:
                reason = f"stalled: no progress for {policy.stall_timeout_s:.0f}s (at {p.transferred // MiB} MiB sent)"
            elif policy.total_timeout_s is not None and now - t0 > policy.total_timeout_s and not p.postcopy:
                reason = f"did not converge within {policy.total_timeout_s:.0f}s"
            if reason is not None:
                if reason.startswith("stalled"):
                    # a blocked write would keep the cancel from being served
                    await asyncio.to_thread(abort_connection, uri)
                if p.postcopy:
                    # Cannot cancel: the VM runs on the destination with part of its RAM still
                    # on the source. Pause so that the link can be recovered (migrate-recover).
                    with contextlib.suppress(QemuError):
                        await src.execute("migrate-pause")
                    raise MigrationFailed(
                        f"VM {src.name}: post-copy migration {reason}; the VM's memory is split between "
                        "source and destination: do not quit either QEMU, recover with migrate-recover")
                res = await _cancel(src, was_running, reason)
                if res is not None:  # it completed before the cancel took effect
                    return res
                raise MigrationCancelled(f"VM {src.name}: migration {reason}; the VM runs on the source")
            if policy.postcopy_fallback and not postcopy and now - last_move < 1.0:
                # (never on a stalled link: post-copy could not be cancelled any more)
                why = judge(p)
                if why is not None:
                    await src.execute("migrate-start-postcopy")
                    postcopy = True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(events.get(), policy.poll_interval_s)
            while not events.empty():
                events.clear()


def abort_connection(uri: str) -> None:
    """Destroy this host's TCP connections to the peer of a ``tcp:HOST:PORT`` migration
    (``ss -K``, in the caller's network namespace). QEMU sees its write fail at once, fails
    the migration and runs the VM on, where a cut link would otherwise hold it until TCP's
    retransmissions give up."""
    kind, _, rest = uri.partition(":")
    host, _, port = rest.rpartition(":")
    if kind != "tcp" or not port.isdigit():
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["ss", "-K", "dst", host.strip("[]"), "dport", "=", port], capture_output=True, timeout=5)


async def cancel_migration(src: QMPConn, reason: str) -> None:
    """Cancel whatever outgoing migration runs and wait until the VM runs again."""
    await _cancel(src, True, reason)


async def _cancel(src: QMPConn, was_running: bool, reason: str, timeout: float = 30.0) -> MigrationResult | None:
    """``migrate_cancel`` and wait until the source runs again. Returns a result instead if
    the migration completed meanwhile (then the VM is on the destination)."""
    with contextlib.suppress(QemuError):
        await src.execute("migrate_cancel")
    deadline = time.monotonic() + timeout
    while True:
        info = await src.execute("query-migrate")
        status = info.get("status")
        if status == "completed":
            ram = info.get("ram") or {}
            return MigrationResult(int(info.get("downtime", 0)), int(info.get("total-time", 0)),
                                   int(info.get("setup-time", 0)), int(ram.get("transferred", 0)),
                                   int(ram.get("total", 0)), False, int(ram.get("dirty-sync-count", 0)),
                                   float(ram.get("mbps", 0.0)))
        if status in ("cancelled", "failed"):
            vm = await src.status()
            if vm == "running" or not was_running:
                return None
            if vm in ("paused", "postmigrate", "finish-migrate"):
                # stopped for the switchover when the cancel came: let it run again
                with contextlib.suppress(QemuError):
                    await src.execute("cont")
        if time.monotonic() > deadline:
            raise MigrationFailed(f"VM {src.name}: migration {reason}, and the cancel did not finish "
                                  f"within {timeout:.0f}s (migration {status})")
        await asyncio.sleep(0.05)


async def wait_incoming_done(dest: QMPConn, timeout: float = 30.0) -> str:
    """Destination side: wait until the incoming migration ended; returns the run state."""
    deadline = time.monotonic() + timeout
    while True:
        st = await dest.status()
        if st not in ("inmigrate", "finish-migrate", "postmigrate") or time.monotonic() > deadline:
            return st
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------
# shared-nothing migration


async def migrate_shared_nothing(
    src: QMPConn,
    dest: QMPConn,
    uri: str,
    nbd_host: str,
    nbd_port: int,
    disks: dict[str, str],
    policy: MigrationPolicy = VIGIL_POLICY,
    progress: Callable[[MigrationProgress], None] | None = None,
    cancel: asyncio.Event | None = None,
    *,
    disk_progress: Callable[[M.MirrorProgress], None] | None = None,
) -> MigrationResult:
    """Migrate a VM whose disks are not on a datastore the destination sees.

    ``disks``: source node name -> destination node name (the destination QEMU runs with
    ``-incoming defer`` on new empty images of the same virtual sizes; see
    :func:`vigil.hypervisor.mirror.current_node` for the source's nodes). ``uri`` is the
    migration URI the destination listens on (:func:`prepare_incoming` first).
    """
    export = await M.nbd_export(dest, nbd_host, nbd_port, list(disks.values()), tls=policy.tls)
    try:
        try:
            mirrors = await M.mirror_to_nbd(src, export, disks, disk_progress, cancel,
                                            tls_hostname=policy.tls_hostname)
        except M.MirrorCancelled as e:
            raise MigrationCancelled(f"VM {src.name}: migration cancelled while copying disks: {e}") from None
        except M.MirrorFailed as e:
            raise MigrationFailed(f"VM {src.name}: disk copy to the destination failed: {e}") from None
        try:
            res = await migrate(src, uri, policy, progress, cancel,
                                before_switchover=lambda: M.finish_mirrors(mirrors))
        except BaseException:
            await M.abort_mirrors(mirrors)
            raise
        return replace(res, disk_bytes=mirrors.bytes)
    finally:
        await M.nbd_stop(dest)


# ---------------------------------------------------------------------------------------
# TLS (the certificates themselves: vigil.pki)


async def ensure_tls_objects(conn: QMPConn, tls_dir: Path) -> None:
    """Create the ``vigil-tls-server``/``vigil-tls-client`` objects on a running QEMU that
    was started without ``tls_dir`` (``object-add``; existing ones are left alone)."""
    have = {o["name"] for o in await conn.execute("qom-list", {"path": "/objects"})}
    for oid, endpoint in ((TLS_SERVER_ID, "server"), (TLS_CLIENT_ID, "client")):
        if oid not in have:
            await conn.execute("object-add", {"qom-type": "tls-creds-x509", "id": oid, "dir": str(tls_dir),
                                              "endpoint": endpoint, "verify-peer": True})
