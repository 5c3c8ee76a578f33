"""The REST API and the dashboard, as one FastAPI application over one etcd connection.

Stateless: everything it knows is in etcd, so any number of servers can run side by side
and any of them answers. Routes are under /api/v1 (OpenAPI at /api/v1/openapi.json,
browsable at /api/v1/docs); the dashboard is served at / from files in the package.
"""
from __future__ import annotations

import contextlib
from importlib.resources import files
from typing import Any, AsyncIterator

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from vigil import __version__
from vigil.api import problems, readmodel
from vigil.api.metrics import metrics_response
from vigil.api.routes import access, admission, cluster, drs, events, monitoring, orchestration, settings, tasks, vms
from vigil.api.routes import datastore_clusters
from vigil.api.schemas import Health, Problem
from vigil.api.security import READ
from vigil.api.stream import Hub
from vigil.store.etcd import Store, StoreError
from vigil.store.tls import EtcdTLS

PREFIX = "/api/v1"
STATIC = files("vigil.api") / "static"
# The dashboard's own files only: no inline script, nothing from elsewhere.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def create_app(endpoints: list[str], tls: EtcdTLS | None = None) -> FastAPI:
    """The application over the etcd cluster at ``endpoints`` (connected when it starts,
    with the client certificate ``tls``).

    Like an agent, it sticks to the first member that answers (list the host's own member
    first) and moves to the next after two failed calls: spreading calls over every member
    would send some to a member that just lost its power, and each of those would fail
    until the channel notices (seconds), while the host's own member answers at once."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(endpoints, prefer_first=True, tls=tls)
        app.state.store, app.state.hub = store, Hub(store)
        readmodel.start(app)
        with contextlib.suppress(StoreError):
            await store.connect()  # etcd may come later: each request says 503 meanwhile
        app.state.hub.start()
        yield
        await app.state.hub.stop()
        await store.close()

    app = FastAPI(title="vigil", version=__version__, openapi_url=f"{PREFIX}/openapi.json", docs_url=None,
                  redoc_url=None, lifespan=lifespan,
                  description="High availability for QEMU/KVM clusters. Authenticate with `Authorization: Bearer "
                              "<token>` (`vigil token create`, or POST /api/v1/auth/token) or a dashboard session.")
    problems.install(app)

    api = APIRouter(prefix=PREFIX)
    for r in (cluster.router, admission.router, vms.router, tasks.router, events.router, access.router, drs.router,
              monitoring.router, orchestration.router, datastore_clusters.router, settings.router):
        api.include_router(r)
    app.include_router(api)

    @app.get("/healthz", response_model=Health, tags=["cluster"])
    async def healthz() -> Health:
        """Alive, and whether etcd answers (no credentials needed: for load balancers)."""
        try:
            await app.state.store.revision()
            return Health(ok=True, etcd=True)
        except StoreError:
            return Health(ok=True, etcd=False)

    @app.get("/metrics", dependencies=[READ], tags=["cluster"], response_class=Response,
             responses={200: {"description": "Prometheus text format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                        **problems.problem_responses(401, 403, 503)})
    async def metrics(request: Request) -> Response:
        """The cluster's state in Prometheus' text format."""
        return await metrics_response(request.app, request.headers.get("accept", ""))

    @app.get(f"{PREFIX}/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "", title="vigil API",
                                   swagger_js_url="/ui/vendor/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="/ui/vendor/swagger-ui/swagger-ui.css", swagger_favicon_url="/ui/favicon.svg")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"Content-Security-Policy": CSP,
                                                                 "Cache-Control": "no-cache"})

    app.mount("/ui", StaticFiles(directory=str(STATIC)), name="ui")

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
    return app


def openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with every validation failure described as what it is: a problem."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema()
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path in doc.get("paths", {}).values():
        for op in path.values():
            if not isinstance(op, dict):
                continue
            if "422" in op.get("responses", {}):
                op["responses"]["422"] = problems.problem_responses(422)[422]
            if "requestBody" in op:  # a body that is not JSON at all
                op["responses"].setdefault("400", problems.problem_responses(400)[400])
    app.openapi_schema = doc
    return doc
