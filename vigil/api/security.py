"""Who is asking, and may they: the dependencies every protected route declares.

A request proves who it is with ``Authorization: Bearer <token>`` (the CLI, scripts,
Prometheus) or with the dashboard's session cookie; a write through a cookie must also
carry the session's CSRF token in ``X-CSRF-Token`` (a cookie is sent by the browser to
any page that posts here; the header only by the dashboard's own script). The principal
is also set as the service layer's requester, so the events a request writes name who.
"""
from __future__ import annotations

import hmac
from typing import Callable, Optional

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from vigil.service import access
from vigil.service.access import Forbidden, Principal, Unauthorized
from vigil.service.common import REQUESTER, Invalid

COOKIE = "vigil_session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
bearer = HTTPBearer(auto_error=False, description="an API token: `vigil token create`, or POST /auth/token")
cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="the dashboard's session (POST /auth/login)")


async def principal(request: Request,
                    cred: Optional[HTTPAuthorizationCredentials] = Depends(bearer),
                    sid: Optional[str] = Depends(cookie)) -> Principal:
    store = request.app.state.store
    if request.headers.get("authorization"):
        if cred is None or cred.scheme.lower() != "bearer":
            raise Unauthorized("use 'Authorization: Bearer <token>'")
        p = await access.by_token(store, cred.credentials)
    elif sid:
        p = await access.by_session(store, sid)
        if request.method not in SAFE_METHODS:
            sent = request.headers.get("x-csrf-token", "")
            if not hmac.compare_digest(sent.encode(), p.csrf.encode()):
                raise Forbidden("missing or wrong CSRF token (X-CSRF-Token)")
    else:
        raise Unauthorized("credentials needed: an API token (Authorization: Bearer) or a dashboard session")
    REQUESTER.set(("api", p.user))
    return p


def role(needed: str) -> Callable[..., object]:
    """A dependency: the principal, if their role is ``needed`` or above."""

    async def check(p: Principal = Depends(principal)) -> Principal:
        if not p.may(needed):
            raise Forbidden(f"{p.user} is {p.role}; this needs {needed} or above")
        return p

    return check


READ = Depends(role("auditor"))
OPERATE = Depends(role("operator"))
ADMIN = Depends(role("admin"))


def if_match(value: Optional[str] = Header(None, alias="If-Match", max_length=32,
                                           description="the object's revision as read; refused (409) if it changed")
             ) -> Optional[int]:
    """The revision a write names, from ``If-Match`` (``"123"``, ``123`` or ``W/"123"``)."""
    if value is None:
        return None
    raw = value.strip().removeprefix("W/").strip('"')
    if not raw.isdigit():
        raise Invalid(f"If-Match: expected a revision number, not {value!r}")
    return int(raw)
