"""What every part of the QEMU driver shares: the binaries, the error type, option quoting."""
from __future__ import annotations

from pathlib import Path

QEMU_BIN = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
MACHINE = "q35"
HB_PORT_NAME = "org.vigil.hb"


class QemuError(RuntimeError):
    """A QEMU operation failed; the message carries QEMU's own words (e.g. a lock error)."""


def _opt(value: str | Path) -> str:
    """Escape a value for QEMU's key=value option syntax (',' is written ',,')."""
    return str(value).replace(",", ",,")
