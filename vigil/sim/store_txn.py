"""The compares and operations of ``vigil.sim.store.MemoryStore``'s transactions, as
``vigil.store.etcd.Store`` offers them (values compared on their JSON encoding, like etcd's
bytes)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Compare:
    key: str
    target: str  # "version" | "mod" | "value"
    op: str  # "==" | ">"
    arg: Any

    def holds(self, store: Any) -> bool:
        """On a MemoryStore (its keys and their encodings)."""
        e = store._kv.get(self.key)
        if self.target == "value":
            if e is None:
                return False
            got: Any = store._enc[self.key]
        elif self.target == "version":
            got = e.version if e else 0
        else:
            got = e.mod_revision if e else 0
        return got == self.arg if self.op == "==" else got > self.arg


@dataclass(frozen=True)
class Op:
    kind: str  # "put" | "delete"
    key: str
    value: Any = None
    lease: int = 0


class _VersionTarget:
    """``store.tx.version(key) > 0`` as ``vigil.service`` writes it against aetcd."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __eq__(self, n: object) -> Compare:  # type: ignore[override]
        return Compare(self.key, "version", "==", n)

    def __gt__(self, n: int) -> Compare:
        return Compare(self.key, "version", ">", n)


class _Tx:
    @staticmethod
    def version(key: bytes) -> _VersionTarget:
        return _VersionTarget(key.decode())
