"""`vigil api`: run an API server (stateless; run one per host, any of them serves)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vigil.cli.common import ETCD_OPT, fail, friendly
from vigil.config import DEFAULT_PATH, AgentConfig, cluster_endpoints
from vigil.config.etcd_client import cluster_tls, etcd_tls

DEFAULT_LISTEN = "127.0.0.1:8443"


@friendly
def api(
    config: Optional[Path] = typer.Option(None, "--config", help=f"the host's vigil.toml: its etcd and api "
                                          f"sections (default: {DEFAULT_PATH} when it exists and --etcd is not given)"),
    listen: Optional[str] = typer.Option(None, "--listen", help=f"ADDRESS[:PORT] to serve HTTPS on (default: "
                                         f"api.listen, else {DEFAULT_LISTEN})"),
    cert: Optional[Path] = typer.Option(None, "--cert", help="the server's TLS certificate (PEM; default: api.cert)"),
    key: Optional[Path] = typer.Option(None, "--key", help="its private key (PEM; default: api.key)"),
    etcd: Optional[str] = ETCD_OPT,
) -> None:
    """Serve the REST API (/api/v1), the web dashboard (/) and /metrics over HTTPS."""
    from vigil.api.server import parse_listen, serve

    # --etcd (or $VIGIL_ETCD) without --config: the endpoints given, the certificate from
    # $VIGIL_ETCD_CA/CERT/KEY or the lab's; otherwise the host's vigil.toml
    path = config or (Path(DEFAULT_PATH) if not etcd and Path(DEFAULT_PATH).exists() else None)
    if path is not None:
        cfg = AgentConfig.load(path)  # a bad file: its problems, one a line (SpecError)
        # the host's own member first, as the agent does (the API sticks to the first that answers)
        own = [e for e in cfg.etcd_endpoints if e.rpartition(":")[0] == cfg.address]
        endpoints = own + [e for e in cfg.etcd_endpoints if e not in own]
        tls = etcd_tls(cfg)
        listen = listen or cfg.api_listen or DEFAULT_LISTEN
        cert = cert or (Path(cfg.api_cert) if cfg.api_cert else None)
        key = key or (Path(cfg.api_key) if cfg.api_key else None)
    else:
        endpoints, tls, listen = cluster_endpoints(etcd), cluster_tls(etcd), listen or DEFAULT_LISTEN
    if cert is None or key is None:
        fail(f"no TLS certificate for the API: give --cert and --key, or api.cert and api.key in {path or DEFAULT_PATH}")
    try:
        parse_listen(listen)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    serve(endpoints, listen, cert, key, tls)
