"""`vigil api`: run an API server (stateless; run one per host, any of them serves)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vigil.cli.common import ETCD_OPT, friendly
from vigil.config import cluster_endpoints


@friendly
def api(
    listen: str = typer.Option("127.0.0.1:8443", "--listen", help="ADDRESS[:PORT] to serve HTTPS on"),
    cert: Path = typer.Option(..., "--cert", help="the server's TLS certificate (PEM)"),
    key: Path = typer.Option(..., "--key", help="its private key (PEM)"),
    etcd: Optional[str] = ETCD_OPT,
) -> None:
    """Serve the REST API (/api/v1), the web dashboard (/) and /metrics over HTTPS."""
    from vigil.api.server import parse_listen, serve

    try:
        parse_listen(listen)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    serve(cluster_endpoints(etcd), listen, cert, key)
