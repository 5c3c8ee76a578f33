"""Every error the API answers is an RFC 9457 problem (``application/problem+json``) with a
4xx or 503 status and the same words the CLI prints; nothing reaches a client as a 500
with a traceback.

The service layer's error classes carry the status (``NotFound`` 404, ``Conflict`` 409,
``Invalid`` 422, ...), so no handler reads a message to choose one.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vigil.model import SpecError
from vigil.service.access import Forbidden, Throttled, Unauthorized
from vigil.service.common import Conflict, NotFound
from vigil.store.etcd import StoreError

log = logging.getLogger("vigil.api")
MEDIA = "application/problem+json"
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
          406: "Not Acceptable", 409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type",
          422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error",
          503: "Service Unavailable"}


def problem(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=MEDIA, headers=headers)


def status_of(e: SpecError) -> int:
    for cls, status in ((Unauthorized, 401), (Forbidden, 403), (Throttled, 429), (NotFound, 404), (Conflict, 409)):
        if isinstance(e, cls):
            return status
    return 422  # Invalid, and a model's own validation


def spec_problem(e: SpecError) -> JSONResponse:
    status = status_of(e)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="vigil"'
    if isinstance(e, Throttled):
        headers["Retry-After"] = str(e.retry_after)
    return problem(status, str(e), headers or None)


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc if x != "body") or "body"


def install(app: FastAPI) -> None:
    """The handlers that turn every failure into a problem."""

    @app.exception_handler(SpecError)
    async def _spec(_: Request, e: SpecError) -> JSONResponse:
        return spec_problem(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = [{"field": _field(tuple(x.get("loc", ()))), "message": x.get("msg", "")} for x in e.errors()]
        detail = "; ".join(f"{x['field']}: {x['message']}" for x in errs) or "invalid request"
        return problem(422, detail, errors=errs)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return problem(e.status_code, str(e.detail), dict(e.headers) if e.headers else None)

    @app.exception_handler(StoreError)
    async def _store(_: Request, e: StoreError) -> JSONResponse:
        log.warning("etcd: %s", e)
        return problem(503, f"cannot reach etcd: {e}", {"Retry-After": "2"})

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error")  # a bug: logged with its traceback, not shown
        return problem(500, f"unexpected {type(e).__name__}; the server's log has the details")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems an operation may answer."""
    ref = {"$ref": "#/components/schemas/Problem"}
    return {s: {"description": TITLES.get(s, "Error"), "content": {MEDIA: {"schema": ref}}} for s in statuses}
