"""The store's writes: puts, deletes, guarded transactions, and the compares and
operations they are made of (each write counted, see vigil.store.etcd_watch._write)."""
from __future__ import annotations

from typing import Any, Callable

from vigil.store.etcd_conn import StoreError, encode_value
from vigil.store.etcd_watch import WatchedReads


class Writes(WatchedReads):
    """Writes and guarded transactions; vigil.store.etcd.Store adds the leases."""

    async def put(self, key: str, value: Any, lease: int = 0) -> None:
        await self._write(self._client.put(key.encode(), encode_value(value), lease=lease or None))

    async def delete(self, key: str) -> bool:
        r = await self._write(self._client.delete(key.encode()))
        return bool(r and r.deleted)

    async def delete_prefix(self, prefix: str) -> None:
        await self._write(self._client.delete_prefix(prefix.encode()))

    async def txn(self, compare: list, success: list, failure: list | None = None) -> bool:
        ok, _ = await self._write(self._client.transaction(compare=compare, success=success, failure=failure or []))
        return bool(ok)

    async def create(self, key: str, value: Any, lease: int = 0, also: list | None = None) -> bool:
        """Write ``key`` only if it does not exist (plus the ``also`` operations, atomically)."""
        return await self.txn(
            [self.tx.version(key.encode()) == 0],
            [self.put_op(key, value, lease)] + list(also or []),
        )

    async def update(self, key: str, change: Callable[[Any], Any], tries: int = 5) -> Any:
        """Read-modify-write of one JSON key: ``change(old value or None)`` is written only
        if nobody wrote the key in between (retried ``tries`` times); the value written."""
        for _ in range(tries):
            e = await self.get(key)
            new = change(e.value if e else None)
            if await self.txn([self.unchanged(key, e.mod_revision if e else 0)], [self.put_op(key, new)]):
                return new
        raise StoreError(f"{key}: changed under us {tries} times")

    def put_op(self, key: str, value: Any, lease: int = 0):  # type: ignore[no-untyped-def]
        return self.tx.put(key.encode(), encode_value(value), lease=lease or None)

    def delete_op(self, key: str):  # type: ignore[no-untyped-def]
        return self.tx.delete(key.encode())

    def absent(self, key: str):  # type: ignore[no-untyped-def]
        return self.tx.version(key.encode()) == 0

    def unchanged(self, key: str, mod_revision: int):  # type: ignore[no-untyped-def]
        """Compare: the key is as it was read (mod_revision 0 means: it did not exist)."""
        return self.tx.mod(key.encode()) == mod_revision

    def equals(self, key: str, value: Any):  # type: ignore[no-untyped-def]
        return self.tx.value(key.encode()) == encode_value(value)
