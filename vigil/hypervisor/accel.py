"""Which accelerator QEMU can use on this machine: "kvm" only where a KVM guest really boots.

On some machines ``/dev/kvm`` exists and QEMU accepts ``-accel kvm``, yet a Linux guest
hangs as soon as it leaves real mode (seen here: SeaBIOS and the kernel's setup code run,
"Probing EDD ... ok" is printed, then nothing). So the probe boots a real Linux guest under
KVM and waits for its ready line; anything else means TCG. A hand-made boot sector is not
enough: it runs fine on those machines.

The probe is slow where KVM hangs (it has to wait), so its answer is cached per machine
boot (``/proc/sys/kernel/random/boot_id``) in one file that every agent, the lab and the
QEMU-level tests share; a lock makes concurrent callers wait for one probe. It must run
before a watchdog is armed (see ``vigil.agent.watchdog``): the lab probes once for all its
hosts before it starts them.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Protocol

QEMU_BIN = "qemu-system-x86_64"
MACHINE = "q35"
READY_LINE = "vigil-guest: up"
CACHE_NAME = "accel.json"


class ProbeGuest(Protocol):
    """A Linux guest that prints :data:`READY_LINE` on its serial port once booted."""

    kernel: Path
    initrd: Path
    cmdline: str


def host_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def kvm_usable() -> str | None:
    """Why KVM cannot be used at all (no device, no access), or None if it may work."""
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm not accessible"
    return None


def cached(cache_dir: Path) -> str | None:
    """The answer cached for this boot, or None (no cache, another boot, unreadable)."""
    cache = Path(cache_dir) / CACHE_NAME
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(cache.read_text())
        if data["host_boot_id"] == host_boot_id() and data["accel"] in ("kvm", "tcg"):
            return str(data["accel"])
    return None


def reason(cache_dir: Path) -> str:
    """Why the cached answer is what it is (for people), or "" if none is cached."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return str(json.loads((Path(cache_dir) / CACHE_NAME).read_text())["why"])
    return ""


def probe_accel(cache_dir: Path, guest: ProbeGuest | None, timeout: float = 10.0,
                stall: float = 3.0) -> str:
    """"kvm" if a KVM guest boots here, else "tcg"; from the cache when it holds this boot's
    answer. ``guest`` may be None only where no probe boot is needed (no usable /dev/kvm,
    or a cached answer): the answer is then immediate."""
    cache = Path(cache_dir) / CACHE_NAME
    cache.parent.mkdir(parents=True, exist_ok=True)
    # Several agents (or the lab and a test) may ask at once: one probe, the others wait.
    with open(cache.with_name(cache.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        hit = cached(cache.parent)
        if hit is not None:
            return hit
        why_not = kvm_usable()
        if why_not is not None:
            accel, why = "tcg", why_not
        elif guest is None:
            raise ValueError("the accelerator probe needs a guest to boot (none given, nothing cached)")
        else:
            accel, why = boot_under_kvm(guest, timeout, stall)
        tmp = cache.with_name(cache.name + ".tmp")
        tmp.write_text(json.dumps({"accel": accel, "host_boot_id": host_boot_id(), "why": why,
                                   "time": time.time()}))
        os.replace(tmp, cache)
        return accel


def boot_under_kvm(guest: ProbeGuest, timeout: float, stall: float) -> tuple[str, str]:
    """Boot ``guest`` with ``-accel kvm``: ("kvm", why) once it is up, else ("tcg", why).

    Gives up early when the serial output, once started, stops growing for ``stall``
    seconds: a working KVM guest boots in about a second and prints all along, a hung one
    stops after the kernel's real-mode setup."""
    with tempfile.TemporaryDirectory(prefix="vigil-kvm-probe-") as td:
        serial = Path(td) / "serial.log"
        argv = [
            QEMU_BIN, "-machine", MACHINE, "-accel", "kvm", "-m", "128", "-nodefaults",
            "-display", "none", "-no-reboot", "-serial", f"file:{str(serial).replace(',', ',,')}",
            "-kernel", str(guest.kernel), "-initrd", str(guest.initrd),
            "-append", guest.cmdline.replace(" quiet", "") + " earlyprintk=serial",
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            start = time.monotonic()
            size, grew = 0, start
            while (now := time.monotonic()) < start + timeout:
                text = serial.read_text(errors="replace") if serial.exists() else ""
                if READY_LINE in text:
                    return "kvm", f"KVM guest booted in {now - start:.1f}s"
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                    return "tcg", f"KVM QEMU exited: {err[-500:]}"
                if len(text) != size:
                    size, grew = len(text), now
                elif size and now - grew > stall:
                    last = text.strip().splitlines()[-1][:120] if text.strip() else ""
                    return "tcg", f"KVM guest stopped booting after {now - start:.1f}s (last line: {last!r})"
                time.sleep(0.05)
            return "tcg", f"KVM guest did not boot within {timeout:.0f}s"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

