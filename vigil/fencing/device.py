"""A host's fence device as vigil.toml describes it and hosts/<name> carries it (no
password: the path of the file that holds it), and what a fence attempt returns."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

KINDS = ("redfish", "ipmi")
DEFAULT_PORT = {"redfish": 443, "ipmi": 623}


class FenceError(Exception):
    """The BMC refused, answered what a driver cannot read, or could not be reached."""


@dataclass(frozen=True)
class FenceDevice:
    kind: str  # "redfish" | "ipmi"
    address: str
    user: str
    password_file: str
    port: int = 0  # 0: the protocol's own
    ca: str = ""  # Redfish: CA of the BMC's certificate; empty: not verified
    timeout_s: float = 5.0
    # fence the host once its datastore heartbeat is silent this long while its lease is
    # alive (a hung host; vigil.policy.fencing.hung_suspect); 0: only after the lease
    hung_after_s: float = 1.5

    @property
    def port_or_default(self) -> int:
        return self.port or DEFAULT_PORT.get(self.kind, 0)

    def password(self) -> str:
        """Read at each fence (a changed password needs no restart); never logged."""
        return Path(self.password_file).read_text().strip("\r\n")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> "FenceDevice | None":
        """hosts/<name>'s ``fencing``; None when empty or not one vigil can use."""
        if not d or d.get("kind") not in KINDS:
            return None
        try:
            return cls(kind=str(d["kind"]), address=str(d["address"]), user=str(d["user"]),
                       password_file=str(d["password_file"]), port=int(d.get("port") or 0),
                       ca=str(d.get("ca") or ""), timeout_s=float(d.get("timeout_s") or 5.0),
                       hung_after_s=float(d.get("hung_after_s", 1.5)))
        except (KeyError, TypeError, ValueError):
            return None

    @classmethod
    def from_config(cls, cfg: Any) -> "FenceDevice | None":
        """From an AgentConfig's fencing_* keys; None when the host has no [fencing]."""
        if not cfg.fencing_kind:
            return None
        return cls(kind=cfg.fencing_kind, address=cfg.fencing_address, user=cfg.fencing_user,
                   password_file=cfg.fencing_password_file, port=cfg.fencing_port, ca=cfg.fencing_ca,
                   timeout_s=cfg.fencing_timeout_s, hung_after_s=cfg.fencing_hung_after_s)


@dataclass(frozen=True)
class FenceResult:
    ok: bool  # power off confirmed by the BMC
    detail: str
    seconds: float
