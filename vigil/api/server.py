"""`vigil api`: the REST API and dashboard served over HTTPS by uvicorn."""
from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from vigil.api.app import create_app
from vigil.logs import setup_logging
from vigil.store.tls import EtcdTLS

DEFAULT_PORT = 8443


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDRESS[:PORT]`` (``[v6]:PORT`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:
        host, port = text, str(DEFAULT_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {text!r}: expected ADDRESS[:PORT]")
    return host, int(port)


def serve(endpoints: list[str], listen: str, cert: Path, key: Path, tls: EtcdTLS | None = None) -> None:
    """Serve until SIGTERM / Ctrl-C. Logs go to stderr (the journal under systemd)."""
    host, port = parse_listen(listen)
    for f in (cert, key):
        if not Path(f).is_file():
            raise FileNotFoundError(f"no such file: {f}")
    setup_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per etcd health probe otherwise
    config = uvicorn.Config(create_app(endpoints, tls), host=host, port=port, ssl_certfile=str(cert),
                            ssl_keyfile=str(key), access_log=False, log_config=None, proxy_headers=False,
                            server_header=False, timeout_graceful_shutdown=3)
    uvicorn.Server(config).run()
