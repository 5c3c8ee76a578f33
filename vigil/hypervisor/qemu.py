"""QEMU driver: build the command line, start QEMU daemonized, adopt it, talk QMP.

QEMU runs with ``-daemonize`` so that an agent restart never stops a VM; everything the
agent needs to find a VM again lives under ``run_dir/<vm>/`` (see :class:`VMPaths`).
Disks are opened with QEMU's image locking on (the default), so a second QEMU that tries to
write the same qcow2 fails to start: the last of vigil's "never two running copies" layers.

Choices worth knowing:

- ``-machine q35``: boots the lab guest as fast as ``pc`` under TCG (about 2.5 s) and is the
  modern machine type for live migration.
- no ``-no-reboot``: a guest that reboots itself is not a failure; the process, its disk
  locks and its ownership key stay, the agent sees a RESET event and a new guest boot_id.
- ``-action panic=shutdown`` with ``-device pvpanic``: a guest kernel panic becomes
  GUEST_PANICKED + SHUTDOWN(reason=guest-panic) and the process exits, so the agent (not
  the guest's ``panic=`` timer) decides what happens next, the way it does for any VM death.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp import EventListener, QMPClient, Runstate
from qemu.qmp import QMPError as _QMPLibError

from vigil.model import DiskSpec, VMSpec, mac_address

QEMU_BIN = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
MACHINE = "q35"
HB_PORT_NAME = "org.vigil.hb"


class QemuError(RuntimeError):
    """A QEMU operation failed; the message carries QEMU's own words (e.g. a lock error)."""


# ---------------------------------------------------------------------------------------
# paths and processes


@dataclass(frozen=True)
class VMPaths:
    """Where one VM's runtime files live: ``run_dir/<vm>/``."""

    dir: Path

    @classmethod
    def for_vm(cls, run_dir: Path, vm: str) -> VMPaths:
        return cls(Path(run_dir) / vm)

    @property
    def qmp_sock(self) -> Path:
        return self.dir / "qmp.sock"

    @property
    def hb_sock(self) -> Path:
        return self.dir / "hb.sock"

    @property
    def pidfile(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def serial_log(self) -> Path:
        return self.dir / "serial.log"

    @property
    def guest_log(self) -> Path:
        return self.dir / "guest.log"

    def net_sock(self, index: int) -> Path:
        """Where QEMU serves the frames of the VM's ``index``-th NIC (``-netdev stream``)."""
        return self.dir / f"net{index}.sock"


def _opt(value: str | Path) -> str:
    """Escape a value for QEMU's key=value option syntax (',' is written ',,')."""
    return str(value).replace(",", ",,")


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    # state is the field after the ")" that closes comm
    return st[st.rindex(")") + 2 :][:1] not in ("Z", "X")


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(Path(pidfile).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _is_vm_process(pid: int, paths: VMPaths) -> bool:
    """The pid is alive and is the QEMU of this VM (guards against pid reuse)."""
    if not pid_alive(pid):
        return False
    argv = _cmdline(pid)
    needle = _opt(paths.qmp_sock)
    if any(needle in arg for arg in argv):
        return True
    # a promoted FT standby was started in a standby dir and its files moved here
    return "-name" in argv[:-1] and argv[argv.index("-name") + 1].split(",")[0] == paths.dir.name \
        and any(str(paths.dir.parent / ".ft") in arg for arg in argv)


def find_running(run_dir: Path) -> dict[str, int]:
    """VM name -> pid of each QEMU still running under run_dir (for an agent to adopt)."""
    out: dict[str, int] = {}
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return out
    for d in sorted(run_dir.iterdir()):
        if not d.is_dir():
            continue
        paths = VMPaths(d)
        pid = read_pid(paths.pidfile)
        if pid and _is_vm_process(pid, paths):
            out[d.name] = pid
    return out


async def wait_pid_exit(pid: int, timeout: float) -> bool:
    """Poll until the (non-child) process is gone; True if it went within timeout."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# ---------------------------------------------------------------------------------------
# command line


def disk_path(disk: DiskSpec, datastore_paths: Mapping[str, str], datastore: str = "") -> Path:
    """The image of ``disk``'s copy on ``datastore`` (its primary copy by default)."""
    ds = datastore or disk.datastore
    try:
        root = datastore_paths[ds]
    except KeyError:
        raise QemuError(f"disk {disk.name}: datastore {ds!r} is not mounted on this host") from None
    return Path(root) / disk.path


def live_copies(disk: DiskSpec, stale: Mapping[str, str]) -> list[tuple[int, str]]:
    """(copy index, datastore) of the copies of ``disk`` that are in sync."""
    return [(j, ds) for j, ds in enumerate(disk.copies) if stale.get(disk.name) != ds]


def disk_node_name(index: int) -> str:
    """The qcow2 (format) node name of the VM's index-th disk, for blockdev-mirror & co."""
    return f"disk{index}"


def disk_device_id(index: int) -> str:
    return f"virtio-disk{index}"


def quorum_node_name(index: int) -> str:
    """The quorum node under a replicated disk's qcow2 node (its ``file`` child)."""
    return f"{disk_node_name(index)}-q"


def copy_node_name(index: int, copy: int) -> str:
    """The file node of one copy of a replicated disk (a child of its quorum node)."""
    return f"{disk_node_name(index)}-c{copy}"


def quorum_blockdev(index: int, files: Sequence[tuple[int, Path]]) -> dict[str, Any]:
    """The ``-blockdev`` of a replicated disk: one qcow2 node over a quorum of the copies'
    *files* ((copy index, image path)), one vote enough, reads from the first child and
    from the next on an error. The quorum sits below qcow2 so that a dead copy is only
    ever read through its file, which fails, never through metadata cached in memory
    (a qcow2 per copy answers reads of clusters it never allocated with zeros)."""
    return {
        "driver": "qcow2",
        "node-name": disk_node_name(index),
        "file": {
            "driver": "quorum",
            "node-name": quorum_node_name(index),
            "vote-threshold": 1,
            "read-pattern": "fifo",
            "children": [{"driver": "file", "node-name": copy_node_name(index, j), "filename": str(p)}
                         for j, p in files],
        },
    }


TLS_SERVER_ID = "vigil-tls-server"
TLS_CLIENT_ID = "vigil-tls-client"


def tls_argv(tls_dir: str | Path) -> list[str]:
    """``-object tls-creds-x509`` for both migration roles of a host (see migration.py).

    ``tls_dir`` holds ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem and
    client-key.pem: the server object serves incoming migrations, the client one outgoing.
    """
    d = _opt(tls_dir)
    return [
        "-object", f"tls-creds-x509,id={TLS_SERVER_ID},dir={d},endpoint=server,verify-peer=on",
        "-object", f"tls-creds-x509,id={TLS_CLIENT_ID},dir={d},endpoint=client,verify-peer=on",
    ]


def build_argv(
    spec: VMSpec,
    paths: VMPaths,
    accel: str,
    datastore_paths: dict[str, str],
    *,
    incoming: bool = False,
    tls_dir: str | Path | None = None,
    standby: bool = False,
    stale: Mapping[str, str] | None = None,
) -> list[str]:
    """The full QEMU command line of a VM (no I/O).

    A disk with a replica runs as a quorum of its copies, without the copy ``stale``
    (disk name -> datastore) names: that one missed writes and waits for a resync.

    ``incoming``: start as the destination of a live migration (``-incoming defer``: the VM
    waits in run state "inmigrate" for ``migrate-incoming``, then runs where the source
    stopped). ``tls_dir``: add the TLS credential objects of :func:`tls_argv`. ``standby``:
    an FT standby, incoming and ``-S``: it stays paused once a checkpoint arrived, until
    ``cont`` makes it the running copy (:mod:`vigil.hypervisor.ft`).
    """
    if accel not in ("kvm", "tcg"):
        raise QemuError(f"unknown accelerator {accel!r}")
    argv = [
        QEMU_BIN,
        "-name", f"{_opt(spec.name)},debug-threads=on",  # vCPU threads named "CPU n/TCG"
        "-daemonize",
        "-pidfile", str(paths.pidfile),
        "-qmp", f"unix:{_opt(paths.qmp_sock)},server=on,wait=off",
        "-machine", MACHINE,
        "-accel", accel,
        "-m", str(spec.memory_mb),
        "-smp", str(spec.vcpus),
        "-nodefaults",
        "-display", "none",
        "-chardev", f"file,id=serial0,path={_opt(paths.serial_log)},append=on",
        "-serial", "chardev:serial0",
        "-device", "virtio-serial-pci,id=vser0",
        "-chardev", f"socket,id=hb,path={_opt(paths.hb_sock)},server=on,wait=off",
        "-device", f"virtserialport,bus=vser0.0,chardev=hb,name={HB_PORT_NAME}",
        "-device", "pvpanic",
        "-action", "panic=shutdown",
    ]
    for i, disk in enumerate(spec.disks):
        node = disk_node_name(i)
        blockdev: dict[str, Any]
        if disk.replica:
            blockdev = quorum_blockdev(i, [(j, disk_path(disk, datastore_paths, ds))
                                           for j, ds in live_copies(disk, stale or {})])
        else:
            blockdev = {
                "driver": "qcow2",
                "node-name": node,
                "file": {"driver": "file", "filename": str(disk_path(disk, datastore_paths)),
                         "node-name": f"{node}-file"},
            }
        dev = f"virtio-blk-pci,drive={node},id={disk_device_id(i)}"
        if spec.boot is None:
            dev += f",bootindex={i}"
        argv += ["-blockdev", json.dumps(blockdev, separators=(",", ":")), "-device", dev]
    for i, _ in enumerate(spec.networks):
        # QEMU serves the NIC's frames on a socket; the agent carries them to the host's
        # bridge for that network (and holds them back while FT protects the VM)
        argv += ["-netdev", f"stream,id=net{i},server=on,addr.type=unix,addr.path={paths.net_sock(i)}",
                 "-device", f"virtio-net-pci,netdev=net{i},id=nic{i},mac={mac_address(spec.name, i)}"]
    if spec.boot is not None:
        argv += ["-kernel", spec.boot.kernel]
        if spec.boot.initrd:
            argv += ["-initrd", spec.boot.initrd]
        if spec.boot.cmdline:
            argv += ["-append", spec.boot.cmdline]
    if tls_dir is not None:
        argv += tls_argv(tls_dir)
    if incoming or standby:
        argv += ["-incoming", "defer"]
    if standby:
        argv += ["-S"]  # an FT standby stays paused after its checkpoint arrived
    return argv


# ---------------------------------------------------------------------------------------
# start


async def _run(argv: list[str], timeout: float = 60.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        kill_pid(proc.pid)
        await proc.wait()
        raise QemuError(f"{argv[0]} did not finish within {timeout:.0f}s") from None
    return proc.returncode or 0, (err or b"").decode(errors="replace").strip() or (out or b"").decode(
        errors="replace"
    ).strip()


async def ensure_disks(spec: VMSpec, datastore_paths: Mapping[str, str],
                       stale: Mapping[str, str] | None = None) -> list[Path]:
    """Create the VM's missing qcow2 disks (never touches an existing one).

    A replicated disk is made once, with its metadata preallocated (the quorum under it
    needs copies of one fixed length), and copied byte for byte to its other datastore;
    it is made only when none of its copies exists: a missing copy beside an existing one
    would be an empty image read as if it held the data."""
    created = []
    for disk in spec.disks:
        copies = [(ds, disk_path(disk, datastore_paths, ds)) for _, ds in live_copies(disk, stale or {})]
        missing = [(ds, p) for ds, p in copies if not p.exists()]
        if not missing:
            continue
        if len(missing) < len(copies):
            raise QemuError(f"disk {disk.name}: its copy on {', '.join(ds for ds, _ in missing)} is missing "
                            f"while another copy exists; resync it with `vigil vm repair-disk {spec.name}`")
        for ds, _ in missing:
            if not Path(datastore_paths[ds]).is_dir():
                raise QemuError(f"disk {disk.name}: datastore path {datastore_paths[ds]} is not there")
        paths = [p for _, p in missing]
        await create_copies(paths, f"{disk.size_mb}M", preallocate=bool(disk.replica))
        created += paths
    return created


async def retry_while_locked(attempt: Callable[[], Awaitable[Any]], wait_s: float) -> None:
    """Run ``attempt`` until it succeeds; a refusal over image locks (a QemuError that says
    "lock": another QEMU, going away, still holds the disk) is retried for ``wait_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            await attempt()
            return
        except QemuError as e:
            if "lock" not in str(e) or loop.time() > deadline:
                raise
        await asyncio.sleep(0.1)


async def create_copies(paths: Sequence[Path], size: str, preallocate: bool) -> None:
    """One new qcow2 image of ``size`` (qemu-img's syntax), copied byte for byte to every
    path: the copies of a replicated disk must be the same file. ``preallocate``: its
    metadata preallocated, so that it keeps one fixed length (a quorum needs that)."""
    first = paths[0]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    opts = ["-o", "preallocation=metadata"] if preallocate else []
    rc, msg = await _run([QEMU_IMG, "create", "-q", "-f", "qcow2", *opts, str(first), size])
    if rc != 0:
        raise QemuError(f"qemu-img create {first}: {msg}")
    for p in paths[1:]:
        rc, msg = await _run(["cp", "--sparse=always", str(first), str(p)])
        if rc != 0:
            raise QemuError(f"copying {first} to {p}: {msg}")


async def start(
    spec: VMSpec,
    paths: VMPaths,
    accel: str,
    datastore_paths: dict[str, str],
    *,
    incoming: bool = False,
    tls_dir: str | Path | None = None,
    standby: bool = False,
    stale: Mapping[str, str] | None = None,
) -> int:
    """Start the VM's QEMU daemonized and return its pid; QemuError with QEMU's message if not.

    With ``incoming`` the QEMU waits for a live migration (see :func:`build_argv`); its
    missing disks are still created (empty, for a shared-nothing migration to fill).
    """
    argv = build_argv(spec, paths, accel, datastore_paths, incoming=incoming, tls_dir=tls_dir, standby=standby,
                      stale=stale)
    paths.dir.mkdir(parents=True, exist_ok=True)
    old = read_pid(paths.pidfile)
    if old and _is_vm_process(old, paths):
        raise QemuError(f"VM {spec.name} already runs here (pid {old})")
    for leftover in (paths.pidfile, paths.qmp_sock, paths.hb_sock, *map(paths.net_sock, range(len(spec.networks)))):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    await ensure_disks(spec, datastore_paths, stale)
    rc, msg = await _run(argv)
    if rc != 0:
        raise QemuError(f"QEMU for VM {spec.name} failed to start: {msg}")
    pid = read_pid(paths.pidfile)
    if pid is None:
        raise QemuError(f"QEMU for VM {spec.name} started but wrote no pidfile {paths.pidfile}: {msg}")
    return pid


# ---------------------------------------------------------------------------------------
# QMP


@dataclass(frozen=True)
class QMPEvent:
    name: str
    data: dict[str, Any]
    timestamp: float


class QMPConn:
    """One QMP session with a VM's QEMU: commands, run state, power operations, events.

    Events are buffered from :meth:`connect` on, so none is lost between connecting and
    iterating :meth:`events`. The iteration ends when QEMU closes the socket (it exited).
    """

    def __init__(self, paths: VMPaths, pid: int | None = None, name: str | None = None) -> None:
        self.paths = paths
        self.pid = pid if pid is not None else read_pid(paths.pidfile)
        self.name = name or paths.dir.name
        self._client = QMPClient(self.name)
        self._listener = EventListener()
        self._client.register_listener(self._listener)

    async def connect(self, timeout: float = 10.0) -> QMPConn:
        """Connect, retrying until the socket answers (QEMU may be just starting)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await asyncio.wait_for(self._client.connect(str(self.paths.qmp_sock)), max(0.5, timeout))
                return self
            except (TimeoutError, _QMPLibError, OSError) as e:
                if time.monotonic() >= deadline:
                    raise QemuError(f"VM {self.name}: cannot connect to QMP {self.paths.qmp_sock}: {e}") from None
                if self.pid is not None and not pid_alive(self.pid):
                    raise QemuError(f"VM {self.name}: QEMU (pid {self.pid}) is not running") from None
                await asyncio.sleep(0.1)

    @property
    def connected(self) -> bool:
        return self._client.runstate == Runstate.RUNNING

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.disconnect()

    async def __aenter__(self) -> QMPConn:
        if self._client.runstate == Runstate.IDLE:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        try:
            return await asyncio.wait_for(self._client.execute(cmd, args), timeout)
        except TimeoutError:
            raise QemuError(f"VM {self.name}: QMP {cmd} timed out after {timeout:.0f}s") from None
        except _QMPLibError as e:
            raise QemuError(f"VM {self.name}: QMP {cmd}: {e}") from None
        except (OSError, EOFError) as e:
            raise QemuError(f"VM {self.name}: QMP {cmd}: connection lost ({e!r})") from None

    def listener(self, names: str | list[str] | None = None) -> Any:
        """A context manager yielding a private ``qemu.qmp.EventListener`` for ``names``.

        For an operation (migration, block job) that waits for its own events without
        taking them from :meth:`events`, which other parts of the agent may be reading.
        """
        return self._client.listener(names)

    async def status(self) -> str:
        """The run state: "running", "paused", "shutdown", "guest-panicked", "inmigrate"..."""
        res = await self.execute("query-status")
        return str(res["status"])  # type: ignore[index]

    async def _wait_exit(self, timeout: float) -> bool:
        if self.pid is None:
            # Without a pid, QEMU closing the socket is the sign it is gone.
            deadline = time.monotonic() + timeout
            while self.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return not self.connected
        return await wait_pid_exit(self.pid, timeout)

    async def shutdown(self, timeout: float) -> bool:
        """ACPI power button, then wait for QEMU to exit; power off if it has not by timeout.

        Returns True if the guest shut down by itself, False if it had to be powered off.
        """
        try:
            await self.execute("system_powerdown", timeout=5.0)
        except QemuError:
            if self.pid is not None and not pid_alive(self.pid):
                return True
        if await self._wait_exit(timeout):
            return True
        await self.power_off()
        return False

    async def power_off(self, grace: float = 3.0) -> None:
        """Pull the plug: QMP ``quit``, then SIGKILL by pid if QEMU is still there."""
        with contextlib.suppress(QemuError):
            await self.execute("quit", timeout=2.0)
        if self.pid is None:
            return
        if not await wait_pid_exit(self.pid, grace):
            kill_pid(self.pid, signal.SIGKILL)
            await wait_pid_exit(self.pid, 10.0)

    async def events(self, names: set[str] | None = None) -> AsyncIterator[QMPEvent]:
        """QMP events (SHUTDOWN, GUEST_PANICKED, STOP, RESUME, RESET, POWERDOWN, ...).

        Ends after QEMU closes the connection and the buffered events are drained.
        """
        while True:
            if self.connected:
                try:
                    msg = await asyncio.wait_for(self._listener.get(), 0.5)
                except TimeoutError:
                    continue
            elif not self._listener.empty():
                msg = await self._listener.get()
            else:
                return
            ev = QMPEvent(
                name=str(msg["event"]),
                data=dict(msg.get("data", {}) or {}),
                timestamp=float(msg["timestamp"]["seconds"]) + float(msg["timestamp"]["microseconds"]) / 1e6,
            )
            if names is None or ev.name in names:
                yield ev

    async def on_events(self, callback: Callable[[QMPEvent], Awaitable[None] | None]) -> None:
        """Call ``callback`` for each event until the connection ends (run it as a task)."""
        async for ev in self.events():
            res = callback(ev)
            if asyncio.iscoroutine(res):
                await res


# ---------------------------------------------------------------------------------------
# guest heartbeat channel

HB_RE = re.compile(r"^hb (\d+) (\d+) (-?\d+) ([0-9a-f-]{8,64})$")


@dataclass(frozen=True)
class Heartbeat:
    """One guest heartbeat line: ``hb <seq> <uptime_ms> <acked> <boot_id>``."""

    seq: int
    uptime_ms: int
    acked: int
    boot_id: str
    received: float  # time.time() on the host

    @classmethod
    def parse(cls, line: str, received: float | None = None) -> Heartbeat | None:
        m = HB_RE.match(line.strip())
        if not m:
            return None
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4),
                   time.time() if received is None else received)


class OutputGate:
    """Where the guest's output reaches the outside world: its heartbeat lines
    (``guest.log``) and its NICs' frames, each item with the sink that delivers it.

    Open, every item goes out at once. Held (an FT primary, the Remus output rule), items
    wait until :meth:`release` is given a cut: the count of items received when a
    checkpoint stopped the guest, released once that checkpoint is safe on the secondary.
    An item counted late is only released later, never early, so a cut taken any time
    while the guest is stopped is safe. Items leave in the order they came, whatever
    their sink.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False
        self.received = 0
        self.released = 0
        self._pending: list[tuple[Callable[[list[Any]], None], Any]] = []

    def add(self, line: str) -> None:
        """A line of the guest's output channel, for ``guest.log``."""
        self.add_to(self._write_lines, line)

    def add_to(self, sink: Callable[[list[Any]], None], item: Any) -> None:
        self.received += 1
        self._pending.append((sink, item))
        if not self.held:
            self.release(self.received)

    def hold(self) -> None:
        self.held = True

    def open(self) -> None:
        """Release everything and let items through again (no checkpoint protects them)."""
        self.held = False
        self.release(self.received)

    def release(self, upto: int) -> None:
        n = min(upto, self.received) - self.released
        if n <= 0:
            return
        out, self._pending = self._pending[:n], self._pending[n:]
        self.released += n
        batch: list[Any] = []
        for i, (sink, item) in enumerate(out):
            batch.append(item)
            if i + 1 == len(out) or out[i + 1][0] != sink:
                with contextlib.suppress(OSError):
                    sink(batch)
                batch = []

    def _write_lines(self, lines: list[str]) -> None:
        with open(self.path, "a") as f:
            f.write("".join(x + "\n" for x in lines))

    @property
    def pending(self) -> int:
        return self.received - self.released


class GuestChannel:
    """The host end of the guest heartbeat port (``hb.sock``): yields parsed heartbeats.

    The chardev accepts one client at a time; while none is connected the guest's write
    blocks, so the first line after connecting can be old (its uptime_ms tells). When the
    connection ends (QEMU exited) the iteration ends; reconnecting is the caller's job.
    Every raw line is appended to ``guest.log`` with the host time.
    """

    def __init__(self, paths: VMPaths, gate: OutputGate | None = None) -> None:
        self.paths = paths
        self.gate = gate or OutputGate(paths.guest_log)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self, timeout: float = 10.0) -> GuestChannel:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(str(self.paths.hb_sock))
                return self
            except OSError as e:
                if time.monotonic() >= deadline:
                    raise QemuError(f"cannot connect to guest channel {self.paths.hb_sock}: {e}") from None
                await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = self._reader = None

    async def __aenter__(self) -> GuestChannel:
        if self._reader is None:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def __aiter__(self) -> AsyncIterator[Heartbeat]:
        if self._reader is None:
            await self.connect()
        assert self._reader is not None
        while True:
            try:
                raw = await self._reader.readline()
            except (OSError, ValueError):
                return
            if not raw:
                return
            now = time.time()
            line = raw.decode(errors="replace").rstrip("\n")
            self.gate.add(f"{now:.3f} {line}")
            hb = Heartbeat.parse(line, now)
            if hb is not None:
                yield hb
