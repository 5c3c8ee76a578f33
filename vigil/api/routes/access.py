"""Logging in (dashboard sessions, API tokens for the CLI), users and tokens."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from vigil.api.problems import problem_responses
from vigil.api.schemas import Done, LoginIn, Me, NewToken, PasswordIn, TokenIn, TokenLoginIn, TokenOut, UserIn, UserOut
from vigil.api.security import ADMIN, COOKIE, principal
from vigil.service import access
from vigil.service.access import SESSION_TTL_S, Forbidden, Principal

router = APIRouter(tags=["access"])
LOGIN = problem_responses(401, 422, 429, 503)


@router.post("/auth/login", response_model=Me, responses=LOGIN)
async def login(body: LoginIn, request: Request, response: Response) -> Me:
    """Open a dashboard session: an HttpOnly, Secure, SameSite=Strict cookie, and the CSRF
    token every write through it must carry (X-CSRF-Token)."""
    store = request.app.state.store
    user = await access.login(store, body.user, body.password)
    sid, csrf = await access.open_session(store, user)
    response.set_cookie(COOKIE, sid, max_age=SESSION_TTL_S, httponly=True, secure=True, samesite="strict", path="/")
    return Me(user=user["name"], role=user["role"], via="session", csrf_token=csrf)


@router.post("/auth/logout", response_model=Done, responses=problem_responses(401, 503))
async def logout(request: Request, response: Response) -> Done:
    sid = request.cookies.get(COOKIE)
    if sid:
        await access.close_session(request.app.state.store, sid)
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return Done(changed=bool(sid), message="logged out")


@router.post("/auth/token", response_model=NewToken, status_code=201, responses=LOGIN)
async def token_login(body: TokenLoginIn, request: Request) -> dict[str, Any]:
    """Trade a user name and password for an API token (what `vigil login` does)."""
    store = request.app.state.store
    user = await access.login(store, body.user, body.password)
    return await access.create_token(store, user["name"], body.name, body.ttl_s)


@router.get("/auth/me", response_model=Me, responses=problem_responses(401, 503))
async def me(p: Principal = Depends(principal)) -> Me:
    return Me(user=p.user, role=p.role, via=p.via, csrf_token=p.csrf)


@router.get("/users", response_model=list[UserOut], dependencies=[ADMIN], responses=problem_responses(401, 403, 503))
async def list_users(request: Request) -> list[dict[str, Any]]:
    return await access.users(request.app.state.store)


@router.post("/users", response_model=UserOut, status_code=201, dependencies=[ADMIN],
             responses=problem_responses(401, 403, 409, 422, 503))
async def add_user(body: UserIn, request: Request) -> dict[str, Any]:
    return await access.add_user(request.app.state.store, body.name, body.password, body.role)


@router.delete("/users/{name}", response_model=Done, dependencies=[ADMIN],
               responses=problem_responses(401, 403, 404, 409, 503))
async def delete_user(name: str, request: Request) -> Done:
    """Delete a user and their tokens; their sessions end with their next request."""
    await access.delete_user(request.app.state.store, name)
    return Done(changed=True, message=f"user {name} deleted")


@router.put("/users/{name}/password", response_model=Done, responses=problem_responses(401, 403, 404, 422, 503))
async def set_password(name: str, body: PasswordIn, request: Request, p: Principal = Depends(principal)) -> Done:
    """An admin sets anyone's password; everyone else only their own."""
    if p.user != name and not p.may("admin"):
        raise Forbidden(f"{p.user} may change only their own password")
    await access.set_password(request.app.state.store, name, body.password)
    return Done(changed=True, message=f"password of {name} changed")


@router.get("/tokens", response_model=list[TokenOut], responses=problem_responses(401, 403, 422, 503))
async def list_tokens(request: Request, all: bool = False, p: Principal = Depends(principal)) -> list[dict[str, Any]]:  # noqa: A002
    """Your tokens (``all``, for an admin: everyone's); never their secrets."""
    if all and not p.may("admin"):
        raise Forbidden("only an admin sees everyone's tokens")
    return await access.tokens(request.app.state.store, None if all else p.user)


@router.post("/tokens", response_model=NewToken, status_code=201, responses=problem_responses(401, 403, 422, 503))
async def create_token(body: TokenIn, request: Request, p: Principal = Depends(principal)) -> dict[str, Any]:
    """A new token of yours, with your role; its secret is in this answer only."""
    return await access.create_token(request.app.state.store, p.user, body.name, body.ttl_s)


@router.delete("/tokens/{tid}", response_model=Done, responses=problem_responses(401, 403, 404, 503))
async def revoke_token(tid: str, request: Request, p: Principal = Depends(principal)) -> Done:
    """Revoke one of your tokens (an admin: anyone's). It stops working at once."""
    await access.revoke_token(request.app.state.store, tid, None if p.may("admin") else p.user)
    return Done(changed=True, message=f"token {tid} revoked")
