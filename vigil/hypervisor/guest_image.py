"""The lab guest image (also the accelerator probe's guest): Debian's cloud kernel + a busybox initramfs built on this machine.

The kernel comes from Debian's ``linux-image-*-cloud-amd64`` package, fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x`` into the cache (never installed on the
host). The initramfs holds static busybox, the few modules the guest needs (virtio,
ACPI button, evdev, pvpanic) and ``guest/init``, which sends the guest heartbeat and runs
the record workload. It boots in a few seconds under TCG.

``read_records`` reads back the workload's records from a qcow2 disk, for loss checks.
"""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

# Bump when the image layout changes in a way the hashed inputs do not show.
BUILD_FORMAT = 3

BUSYBOX = Path("/bin/busybox")

# Modules the guest loads, by module name; dependencies are added from each module's
# modinfo "depends=". Anything built into the kernel is skipped.
GUEST_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "virtio_net",
    "button",  # ACPI power button (system_powerdown)
    "evdev",  # /dev/input/event* for busybox acpid
    "pvpanic_mmio",  # -device pvpanic (ISA) -> GUEST_PANICKED
    "pvpanic_pci",
    "virtio_balloon",  # a VM with a balloon device reports its guest's memory figures (guest-stats)
)

# no_timer_check: without it about 1 in 20 concurrent TCG boots panicked (timer IRQ check).
# The rest skips what the guest never uses and TCG runs slowly (initcall_debug, the slowest
# initcalls on the lab's TCG): the crypto self-tests (crypto_algapi_init, ~380 ms), IPv6
# (inet6_init, ~200 ms; the lab's guests speak IPv4), the kernel's certificate list, the
# kprobe trace events, the KDF self-test and encrypted keys (~140 ms, ~110 ms). From QEMU's
# start to the guest's READY_LINE: 3.74 -> 3.21 s, median of 5 boots each, in turns.
BASE_CMDLINE = ("console=ttyS0 no_timer_check panic=1 quiet loglevel=4 cryptomgr.notests ipv6.disable=1 "
                "initcall_blacklist=load_system_certificate_list,init_kprobe_trace,crypto_kdf108_init,init_encrypted")

from vigil.config import cache_dir as vigil_cache_dir
from vigil.hypervisor import kernel_package
from vigil.hypervisor.accel import READY_LINE  # noqa: F401  (the line the guest prints once up)


def default_cache_dir() -> Path:
    return vigil_cache_dir() / "guest"


class GuestImageError(RuntimeError):
    """The guest image could not be built; the message says which step failed."""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    cmdline: str


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise GuestImageError(f"{argv[0]} not found: {e}") from None
    if p.returncode != 0:
        raise GuestImageError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return p.stdout


def _guest_file(name: str) -> bytes:
    return resources.files("vigil.hypervisor").joinpath("guest", name).read_bytes()


def resolve_kernel_package(cache_dir: Path | None = None) -> tuple[str, str]:
    """Return (package, version) of the real kernel package behind the cloud meta package
    (apt's answer kept in ``cache_dir`` while apt's inputs are unchanged)."""
    try:
        return kernel_package.resolve(cache_dir or default_cache_dir(), _run)
    except LookupError as e:
        raise GuestImageError(str(e)) from None


def _download(pkg: str, dest: Path, progress: Callable[[str], None]) -> Path:
    """``apt-get download`` into dest (apt-get update only if the first try fails)."""
    dest.mkdir(parents=True, exist_ok=True)
    for attempt in (1, 2):
        p = subprocess.run(["apt-get", "download", "-q", pkg], cwd=dest, capture_output=True, text=True)
        debs = sorted(dest.glob(f"{pkg}_*.deb"))
        if p.returncode == 0 and debs:
            return debs[-1]
        if attempt == 1:
            progress(f"apt-get download {pkg} failed, running apt-get update")
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
    raise GuestImageError(f"apt-get download {pkg} failed: {p.stderr.strip()[-2000:]}")


def _modinfo_depends(ko: bytes) -> list[str]:
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", ko)
    if not m or not m.group(1):
        return []
    return [d.decode() for d in m.group(1).split(b",") if d]


def _read_ko(path: Path) -> bytes:
    """A module's bytes, decompressed (busybox insmod loads plain .ko only)."""
    data = path.read_bytes()
    name = path.name
    if name.endswith(".ko.xz"):
        import lzma

        return lzma.decompress(data)
    if name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if name.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    return data


def _norm(name: str) -> str:
    return name.replace("-", "_")


def collect_modules(moddir: Path, wanted: tuple[str, ...] = GUEST_MODULES) -> list[tuple[str, bytes]]:
    """Modules to load, in dependency order, as (name, decompressed .ko bytes).

    Debian's package ships no modules.dep (depmod runs at install time), so dependencies
    come from each module's own modinfo. Names not found as modules are built in (or absent
    from this kernel) and skipped.
    """
    index: dict[str, Path] = {}
    for p in moddir.rglob("*.ko*"):
        base = p.name.split(".ko")[0]
        index[_norm(base)] = p
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        n = _norm(name)
        if n in seen:
            return
        seen.add(n)
        path = index.get(n)
        if path is None:
            return
        data = _read_ko(path)
        for dep in _modinfo_depends(data):
            visit(dep)
        order.append((n, data))

    for w in wanted:
        visit(w)
    return order


class _Cpio:
    """Minimal cpio "newc" writer, enough for an initramfs (files, dirs, symlinks, nodes)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        nameb = name.encode() + b"\x00"
        hdr = "070701" + "".join(
            f"{v:08x}"
            for v in (
                self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nameb), 0,
            )
        )
        self.ino += 1
        self.buf.write(hdr.encode() + nameb)
        self.buf.write(b"\x00" * (-(110 + len(nameb)) % 4))
        self.buf.write(data)
        self.buf.write(b"\x00" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        self.buf.write(b"\x00" * (-self.buf.tell() % 512))
        return self.buf.getvalue()


def busybox_applets() -> list[str]:
    out = _run([str(BUSYBOX), "--list-full"])
    return [line.strip() for line in out.splitlines() if line.strip()]


def build_initramfs(modules: list[tuple[str, bytes]]) -> bytes:
    """The gzip'd newc cpio: busybox + applet symlinks, modules, /init, acpid handler."""
    c = _Cpio()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "tmp",
              "etc", "etc/acpi", "etc/acpi/PWRF", "lib", "lib/modules", "var", "var/log"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3)
    c.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in busybox_applets():
        applet = applet.lstrip("/")
        if applet in ("bin/busybox", "linuxrc") or "/" not in applet:
            continue
        c.symlink(applet, "/bin/busybox")
    for name, data in modules:
        c.file(f"lib/modules/{name}.ko", data)
    c.file("etc/modules.order", "".join(f"{n}\n" for n, _ in modules).encode())
    c.file("etc/acpi/PWRF/00000080", _guest_file("acpi-power"), 0o755)
    c.file("init", _guest_file("init"), 0o755)
    c.file("bin/vigil-echo", _guest_file("echo"), 0o755)
    c.file("bin/vigil-hang", _guest_file("hang"), 0o755)
    c.file("bin/vigil-app-heartbeat", _guest_file("app-heartbeat"), 0o755)
    return gzip.compress(c.finish(), compresslevel=6, mtime=0)


def _inputs_hash(kernel_pkg: str, kernel_version: str) -> str:
    h = hashlib.sha256()
    for part in (
        str(BUILD_FORMAT).encode(),
        kernel_pkg.encode(),
        kernel_version.encode(),
        _guest_file("init"),
        _guest_file("acpi-power"),
        _guest_file("echo"),
        _guest_file("hang"),
        _guest_file("app-heartbeat"),
        ",".join(GUEST_MODULES).encode(),
        BASE_CMDLINE.encode(),
        hashlib.sha256(BUSYBOX.read_bytes()).hexdigest().encode(),
    ):
        h.update(part)
        h.update(b"\x00")
    return h.hexdigest()[:16]


def build_guest_image(
    cache_dir: Path | None = None,
    progress: Callable[[str], None] = print,
) -> GuestImage:
    """Build (or return the cached) guest image, by default in ``<vigil cache>/guest``.
    Safe to call from several processes."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not BUSYBOX.exists():
        raise GuestImageError(f"{BUSYBOX} missing: install busybox-static (scripts/install-deps.sh)")
    kernel = cache_dir / "vmlinuz"
    initrd = cache_dir / "initrd.gz"
    stamp = cache_dir / "image.json"
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pkg, version = resolve_kernel_package(cache_dir)
        except GuestImageError:
            # No apt metadata: an image already built is better than none.
            if stamp.exists() and kernel.exists() and initrd.exists():
                return GuestImage(kernel, initrd, json.loads(stamp.read_text())["cmdline"])
            raise
        digest = _inputs_hash(pkg, version)
        if stamp.exists() and kernel.exists() and initrd.exists():
            try:
                meta = json.loads(stamp.read_text())
            except ValueError:
                meta = {}
            if meta.get("hash") == digest:
                return GuestImage(kernel, initrd, meta["cmdline"])

        progress(f"guest image: building from {pkg} {version}")
        pkgdir = cache_dir / "pkg"
        extract = cache_dir / f"kernel-{version}"
        if not (extract / "boot").is_dir():
            for old in pkgdir.glob("*.deb") if pkgdir.exists() else ():
                if not old.name.startswith(f"{pkg}_"):
                    old.unlink()
            deb = next(iter(sorted(pkgdir.glob(f"{pkg}_*.deb"))), None) if pkgdir.exists() else None
            if deb is None:
                progress(f"guest image: apt-get download {pkg}")
                deb = _download(pkg, pkgdir, progress)
            tmp = Path(tempfile.mkdtemp(prefix="extract-", dir=cache_dir))
            try:
                _run(["dpkg-deb", "-x", str(deb), str(tmp)])
                if extract.exists():
                    shutil.rmtree(extract)
                tmp.rename(extract)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        vmlinuz = sorted((extract / "boot").glob("vmlinuz-*"))
        if not vmlinuz:
            raise GuestImageError(f"no boot/vmlinuz-* in {pkg}")
        moddirs = sorted(p for p in (extract / "lib" / "modules").glob("*") if p.is_dir()) or sorted(
            p for p in (extract / "usr" / "lib" / "modules").glob("*") if p.is_dir()
        )
        if not moddirs:
            raise GuestImageError(f"no lib/modules in {pkg}")
        modules = collect_modules(moddirs[-1])
        missing = [m for m in ("virtio_console", "virtio_blk", "virtio_pci") if m not in {n for n, _ in modules}]
        config = next(iter(sorted((extract / "boot").glob("config-*"))), None)
        if missing and config is not None:
            cfg = config.read_text()
            names = {"virtio_console": "VIRTIO_CONSOLE", "virtio_blk": "VIRTIO_BLK", "virtio_pci": "VIRTIO_PCI"}
            really = [m for m in missing if f"CONFIG_{names[m]}=y" not in cfg]
            if really:
                raise GuestImageError(f"kernel {pkg} lacks {', '.join(really)}")
        progress(f"guest image: initramfs with modules {' '.join(n for n, _ in modules)}")
        data = build_initramfs(modules)

        tmpk = cache_dir / "vmlinuz.tmp"
        shutil.copyfile(vmlinuz[-1], tmpk)
        os.replace(tmpk, kernel)
        tmpi = cache_dir / "initrd.gz.tmp"
        tmpi.write_bytes(data)
        os.replace(tmpi, initrd)
        # Keep only the current extraction.
        for old in cache_dir.glob("kernel-*"):
            if old != extract:
                shutil.rmtree(old, ignore_errors=True)
        meta = {"hash": digest, "cmdline": BASE_CMDLINE, "package": pkg, "version": version}
        tmps = cache_dir / "image.json.tmp"
        tmps.write_text(json.dumps(meta, indent=1))
        os.replace(tmps, stamp)
        progress(f"guest image: ready in {cache_dir}")
        return GuestImage(kernel, initrd, BASE_CMDLINE)


RECORD_RE = re.compile(rb"^vigil-rec (\d+) ")


def parse_records(raw: bytes) -> list[int]:
    """Record numbers in a raw disk image: record N lives in sector N+1."""
    out: list[int] = []
    for off in range(512, len(raw) - 511, 512):
        if raw[off : off + 10] != b"vigil-rec ":
            continue
        m = RECORD_RE.match(raw[off : off + 64])
        if m and int(m.group(1)) == off // 512 - 1:
            out.append(int(m.group(1)))
    return out


def read_records(disk: Path) -> list[int]:
    """The record numbers on a qcow2 (or raw) disk, sorted; works while a VM uses the disk.

    ``qemu-img convert -U`` (force share) reads without taking the image lock; a record
    the guest has not flushed yet may be missing, an acked one never should be.
    """
    return parse_records(_raw_bytes(disk))


def _raw_bytes(disk: Path) -> bytes:
    """The disk's contents as raw bytes (``-U``: readable while a VM holds its lock)."""
    with tempfile.TemporaryDirectory(prefix="vigil-records-") as td:
        raw = Path(td) / "disk.raw"
        p = subprocess.run(
            ["qemu-img", "convert", "-U", "-O", "raw", str(disk), str(raw)],
            capture_output=True, text=True,
        )
        if p.returncode != 0:
            raise GuestImageError(f"qemu-img convert {disk}: {p.stderr.strip()}")
        return raw.read_bytes()


def record_boot_ids(disk: Path) -> dict[int, str]:
    """Record number -> boot_id of the guest boot that wrote it (to see restarts)."""
    data = _raw_bytes(disk)
    out: dict[int, str] = {}
    for n in parse_records(data):
        parts = data[(n + 1) * 512 : (n + 1) * 512 + 100].split(b"\n")[0].split()
        out[n] = parts[2].decode() if len(parts) > 2 else ""
    return out
