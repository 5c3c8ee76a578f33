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

The parts: vigil.hypervisor.migration_policy (policy, progress, result, errors, QEMU
settings) and vigil.hypervisor.migration_source (the source's loop); this module holds
shared-nothing migration and TLS objects and names them all.
"""
from __future__ import annotations

import asyncio
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Callable

from vigil.hypervisor import mirror as M
from vigil.hypervisor.dhparams import ensure_dh_params
from vigil.hypervisor.migration_policy import (LIBVIRT_DEFAULTS, QEMU_DEFAULT_BANDWIDTH_MIB_S,
                                               QEMU_DEFAULT_DOWNTIME_MS, QEMU_DEFAULTS, UNLIMITED_BANDWIDTH,
                                               VIGIL_POLICY, MiB, MigrationCancelled, MigrationFailed,
                                               MigrationPolicy, MigrationProgress, MigrationResult, _configure,
                                               prepare_incoming, progress_from, set_caps)
from vigil.hypervisor.migration_source import (_PostcopyJudge, _cancel, abort_connection, cancel_migration,
                                               migrate, wait_incoming_done)
from vigil.hypervisor.qemu import TLS_CLIENT_ID, TLS_SERVER_ID, QMPConn

__all__ = [
    "LIBVIRT_DEFAULTS", "QEMU_DEFAULT_BANDWIDTH_MIB_S", "QEMU_DEFAULT_DOWNTIME_MS", "QEMU_DEFAULTS",
    "UNLIMITED_BANDWIDTH", "VIGIL_POLICY", "MiB", "MigrationCancelled", "MigrationFailed", "MigrationPolicy",
    "MigrationProgress", "MigrationResult", "prepare_incoming", "progress_from", "set_caps",
    "abort_connection", "cancel_migration", "migrate", "wait_incoming_done", "migrate_shared_nothing",
    "ensure_tls_objects",
]
_ = (subprocess, _configure, _PostcopyJudge, _cancel)  # re-exported (tests patch MG.subprocess.run)


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
    ensure_dh_params(tls_dir)  # else the server object makes DH parameters: ~0.5 s of QEMU's CPU
    have = {o["name"] for o in await conn.execute("qom-list", {"path": "/objects"})}
    for oid, endpoint in ((TLS_SERVER_ID, "server"), (TLS_CLIENT_ID, "client")):
        if oid not in have:
            await conn.execute("object-add", {"qom-type": "tls-creds-x509", "id": oid, "dir": str(tls_dir),
                                              "endpoint": endpoint, "verify-peer": True})
