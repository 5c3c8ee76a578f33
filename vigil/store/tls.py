"""Client TLS to etcd: the CA that signed the members, this client's certificate and key.

etcd runs with ``--client-cert-auth``: a client without a certificate signed by the
cluster CA is refused, and nothing listens in plain text. aetcd 1.0's ``Client`` only
opens insecure channels, so ``TLSClient`` is aetcd's client with a secure channel (the
rest of aetcd is used as it is). The members' certificates all name ``server_name`` (one
name for the cluster: a gRPC channel over several members checks each against the same
name); the HTTP ``/health`` check verifies the member's IP address instead.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import aetcd
import grpc
from aetcd import rpc, watcher
from aetcd.client import _handle_errors

DEFAULT_SERVER_NAME = "vigil-etcd"  # a DNS name in every member certificate `vigil cluster init` makes


@dataclass(frozen=True)
class EtcdTLS:
    """Paths of the PEM files a client presents to etcd (all three are needed)."""

    ca: str
    cert: str
    key: str
    server_name: str = DEFAULT_SERVER_NAME

    @classmethod
    def of(cls, ca: str, cert: str, key: str, server_name: str = "") -> "EtcdTLS | None":
        """The credentials, or None when no CA is given (a plain-text etcd, old setups)."""
        if not ca:
            return None
        return cls(ca, cert, key, server_name or DEFAULT_SERVER_NAME)

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca).read_bytes(),
            private_key=Path(self.key).read_bytes() if self.key else None,
            certificate_chain=Path(self.cert).read_bytes() if self.cert else None)

    @cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """For etcd's HTTP endpoints (/health, the gRPC gateway): verifies the member's address."""
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


def scheme(tls: EtcdTLS | None) -> str:
    return "https" if tls is not None else "http"


class TLSClient(aetcd.Client):
    """aetcd's Client over a TLS channel with a client certificate."""

    def __init__(self, *args: Any, tls: EtcdTLS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tls = tls
        self._options = {**self._options, "grpc.ssl_target_name_override": tls.server_name}

    @_handle_errors
    async def connect(self) -> None:
        """As aetcd's connect (no user/password: the certificate is the identity), but secure."""
        if self._connected.is_set():
            return
        if self._is_connecting:
            import asyncio

            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            target = f"{self._host}:{self._port}"
            self.channel = rpc.secure_channel(target, self._tls.grpc_credentials(), options=self._options.items())
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout,
                                            metadata=self.metadata)
            self._connected.set()
        finally:
            self._is_connecting = False
