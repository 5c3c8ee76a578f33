"""The source side of a live migration: the ``query-migrate`` loop with progress,
post-copy fallback, stall and timeout cancels (see vigil.hypervisor.migration)."""
from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from typing import Awaitable, Callable

from vigil.hypervisor.migration_policy import (VIGIL_POLICY, MiB, MigrationCancelled, MigrationFailed,
                                               MigrationPolicy, MigrationProgress, MigrationResult, _configure,
                                               progress_from)
from vigil.hypervisor.qemu import QemuError, QMPConn


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
        try:
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
                        raise MigrationFailed(f"VM {src.name}: QEMU does not answer during the migration: {e}",
                                              postcopy=postcopy) from None
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
                    if not postcopy:
                        await _left_finish_migrate(src)
                    raise MigrationFailed(f"VM {src.name}: migration {p.status}: "
                                          f"{info.get('error-desc', 'no reason given')}", postcopy=postcopy)
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
                            "source and destination: do not quit either QEMU, recover with migrate-recover",
                            postcopy=True)
                    res = await _cancel(src, was_running, reason)
                    if res is not None:  # it completed before the cancel took effect
                        return res
                    raise MigrationCancelled(f"VM {src.name}: migration {reason}; the VM runs on the source")
                if policy.postcopy_fallback and not postcopy and now - last_move < 1.0:
                    # (never on a stalled link: post-copy could not be cancelled any more)
                    why = judge(p)
                    if why is not None:
                        postcopy = True  # asked for: from here on it may have begun, even if the call fails
                        await src.execute("migrate-start-postcopy")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(events.get(), policy.poll_interval_s)
                while not events.empty():
                    events.clear()
        except MigrationFailed:
            raise
        except QemuError as e:
            # a QMP call of the loop failed: the error keeps its type (to vigil.agent.ft a
            # QemuError, unlike a MigrationFailed, means the checkpoint may be complete on the
            # standby) and says whether post-copy had been asked for
            e.postcopy = postcopy  # type: ignore[attr-defined]
            raise


async def _left_finish_migrate(src: QMPConn, timeout: float = 2.0) -> None:
    """A failed pre-copy: QEMU resumes the source itself, a moment after it reports the
    failure. Wait (briefly) until the run state has left "finish-migrate", so that the
    caller never takes a copy about to run again for one that cannot. Nothing is resumed
    here: a source stopped on purpose stays stopped."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(QemuError):
        while await src.status() == "finish-migrate" and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


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
