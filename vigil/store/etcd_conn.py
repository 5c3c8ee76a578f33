"""The connection under vigil.store.etcd.Store: its members, TLS, deadlines and retries.

Every call has a deadline, so a partitioned member makes a call fail quickly rather than
hang; callers treat ``StoreError`` as "etcd is not reachable now" and decide what that means.
The gRPC channel is given every endpoint: a dead member is skipped by the channel itself,
and an agent that sticks to its own member moves to the next one after two failed calls.
Also here: ``Entry`` and the JSON encoding of the values the store carries.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Iterable, Self

import aetcd
import grpc

from vigil.store.tls import EtcdTLS, TLSClient


class StoreError(RuntimeError):
    """etcd could not be reached or refused the request."""


@dataclass(frozen=True)
class Entry:
    key: str
    value: Any
    mod_revision: int
    version: int
    lease: int


def decode_value(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def encode_value(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _target(endpoints: Iterable[str]) -> tuple[str, int]:
    """aetcd joins host and port into one gRPC target; a multi-address target lists them all."""
    eps = [e.removeprefix("http://").removeprefix("https://") for e in endpoints]
    if not eps:
        raise StoreError("no etcd endpoints configured")
    if len(eps) == 1:
        host, _, port = eps[0].rpartition(":")
        return host, int(port)
    head = ",".join(eps[:-1])
    host, _, port = eps[-1].rpartition(":")
    return f"ipv4:{head},{host}", int(port)


class Connection:
    """One connection to the etcd cluster: the client, the member it prefers, the calls."""

    def __init__(self, endpoints: Iterable[str], timeout: float = 2.0, prefer_first: bool = False,
                 tls: EtcdTLS | None = None) -> None:
        """``prefer_first``: stick to the first reachable endpoint in order (an agent lists its
        own host's member first); otherwise spread calls over every connected member.
        ``tls``: the client certificate etcd asks for (None: plain text)."""
        self.endpoints = list(endpoints)
        self.tls = tls
        _target(self.endpoints)  # fail early on an empty list
        self.timeout = timeout
        self.prefer_first = prefer_first
        self._order = list(self.endpoints)
        self._failures = 0
        self._client = self._make_client()
        self.tx = self._client.transactions

    def _make_client(self) -> aetcd.Client:
        host, port = _target(self._order)
        tls = {} if self.tls is None else {"tls": self.tls}  # TLSClient: aetcd's over a secure channel
        return (aetcd.Client if self.tls is None else TLSClient)(
            host=host,
            port=port,
            timeout=self.timeout,
            options={
                "grpc.lb_policy_name": "pick_first" if self.prefer_first else "round_robin",
                "grpc.initial_reconnect_backoff_ms": 200,
                "grpc.min_reconnect_backoff_ms": 200,
                "grpc.max_reconnect_backoff_ms": 1000,
                # A member that vanished without a reset (power cut, link down) is noticed
                # by the missing ping answer within ~2 s, and its connection dropped. etcd
                # refuses pings while no call is open, so ping only during calls.
                "grpc.keepalive_time_ms": 1000,
                "grpc.keepalive_timeout_ms": 1000,
                "grpc.keepalive_permit_without_calls": 0,
                "grpc.http2.max_pings_without_data": 0,
                "grpc.enable_retries": 0,
                # Never inherit another channel's connection to a member that since died.
                "grpc.use_local_subchannel_pool": 1,
            },
            **tls,
        )

    async def _next_member(self) -> None:
        """Move to the next member. pick_first keeps a member whose connection is fine but
        which cannot serve (cut off from the raft leader by a partial partition): every call
        then times out, so after two failures in a row the agent tries another member."""
        self._order = self._order[1:] + self._order[:1]
        old, self._client = self._client, self._make_client()
        self.tx = self._client.transactions
        self._client_changed()
        # Calls still running on the old channel end by their deadline; closing it now
        # would cancel them, and a cancelled call raises CancelledError in its caller.
        asyncio.get_running_loop().call_later(
            3 * self.timeout, lambda: asyncio.ensure_future(_close_quietly(old)))

    def _client_changed(self) -> None:
        """Called when the calls moved to another member (see vigil.store.etcd_watch)."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, coro):  # type: ignore[no-untyped-def]
        try:
            result = await coro
        except (aetcd.ClientError, grpc.RpcError, OSError) as e:
            self._failures += 1
            if self.prefer_first and len(self._order) > 1 and self._failures >= 2:
                self._failures = 0
                await self._next_member()
            raise StoreError(f"etcd ({', '.join(self.endpoints)}): {type(e).__name__}: {e}") from None
        self._failures = 0
        return result

    async def connect(self) -> None:
        await self._call(self._client.connect())

    async def close(self) -> None:
        await _close_quietly(self._client)


async def _close_quietly(client: aetcd.Client) -> None:
    try:
        await client.close()
    except Exception:  # closing a broken channel is not worth an error
        pass

