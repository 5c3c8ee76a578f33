"""Who may do what: users with passwords, API tokens, dashboard sessions, the login throttle.

Everything lives in etcd under ``keys.AUTH`` (outside what agents read), so any number of
stateless API servers share it and a revocation counts at once on all of them. Passwords
are hashed with argon2 (memory-hard: a stolen etcd backup does not hand out the
passwords); tokens and session ids are 256-bit random secrets, so a plain SHA-256 of them
is what is stored, and a token is shown once, when it is made.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from vigil.service.common import Conflict, Invalid, NotFound
from vigil.store import keys as K
from vigil.store.etcd import Store

ROLES = ("auditor", "operator", "admin")  # each may do what the one before it may, and more
USER_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
MIN_PASSWORD = 8
TOKEN_PREFIX = "vgl_"
SESSION_TTL_S = 8 * 3600
LOGIN_WINDOW_S = 60  # failed logins are counted per user name over this window ...
LOGIN_MAX_FAILURES = 5  # ... and past this many, logins of that name are refused until it ends
MAX_TOKEN_TTL_S = 366 * 24 * 3600

_hasher = PasswordHasher()


class Unauthorized(Invalid):
    """No or bad credentials: 401."""


class Forbidden(Invalid):
    """Known user, not allowed: 403."""


class Throttled(Conflict):
    """Too many failed logins for this name: 429, with how long to wait."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Principal:
    """The person behind a request, and how they proved it."""

    user: str
    role: str
    via: str  # "token" | "session"
    csrf: str = ""  # the session's CSRF token (sessions only)

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_role(role: str) -> None:
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}, not {role!r}")


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise Invalid("a password has at most 1024 characters")


def check_user_name(name: str) -> None:
    if not USER_NAME.match(name):
        raise Invalid(f"user name {name!r}: use 1-32 lower-case letters, digits, '_', '.', '-', starting with a letter")


# -- users ---------------------------------------------------------------------------------
async def add_user(store: Store, name: str, password: str, role: str) -> dict[str, Any]:
    check_user_name(name)
    check_role(role)
    check_password(password)
    user = {"name": name, "role": role, "hash": _hasher.hash(password), "created": time.time()}
    if not await store.create(K.USERS + name, user):
        raise Conflict(f"a user named {name!r} already exists")
    return public_user(user)


def public_user(u: dict[str, Any]) -> dict[str, Any]:
    return {"name": u["name"], "role": u["role"], "created": u.get("created", 0.0)}


async def users(store: Store) -> list[dict[str, Any]]:
    return [public_user(e.value) for _, e in sorted((await store.get_prefix(K.USERS)).items())]


async def get_user(store: Store, name: str) -> dict[str, Any]:
    e = await store.get(K.USERS + name) if USER_NAME.match(name) else None
    if e is None:
        raise NotFound(f"no user named {name!r}")
    return dict(e.value)


async def delete_user(store: Store, name: str) -> None:
    """Delete a user and every token of theirs (their sessions end at the next request: the
    user is gone). The last admin cannot be deleted: nobody could manage users after."""
    u = await get_user(store, name)
    if u["role"] == "admin" and sum(1 for x in await users(store) if x["role"] == "admin") <= 1:
        raise Conflict(f"{name} is the last admin; make another admin first")
    tokens = [e for e in (await store.get_prefix(K.TOKENS)).values() if e.value.get("user") == name]
    await store.txn([], [store.delete_op(K.USERS + name), *(store.delete_op(t.key) for t in tokens)])


async def set_password(store: Store, name: str, password: str) -> None:
    check_password(password)
    await get_user(store, name)
    await store.update(K.USERS + name, lambda u: {**u, "hash": _hasher.hash(password)})


# -- login ---------------------------------------------------------------------------------
async def login(store: Store, name: str, password: str) -> dict[str, Any]:
    """The user record when the password is right; else Unauthorized (the same words for an
    unknown user and a wrong password), counted by the throttle."""
    fkey = K.LOGINFAIL + _sha(name)[:24]
    fails = await store.get(fkey)
    if fails is not None and int(fails.value.get("count", 0)) >= LOGIN_MAX_FAILURES:
        wait = max(1, int(fails.value.get("until", 0) - time.time()))
        raise Throttled(f"too many failed logins for {name!r}; try again in {wait} s", wait)
    e = await store.get(K.USERS + name) if USER_NAME.match(name) else None
    ok = False
    if e is not None:
        try:
            ok = _hasher.verify(e.value["hash"], password)
        except (VerificationError, InvalidHashError):
            ok = False
    else:
        _hasher.hash(password)  # the same time spent either way: no telling which names exist
    if not ok:
        await _count_failure(store, fkey)
        raise Unauthorized("wrong user name or password")
    if fails is not None:
        await store.delete(fkey)
    return dict(e.value)  # type: ignore[union-attr]


async def _count_failure(store: Store, key: str) -> None:
    e = await store.get(key)
    if e is None:
        lease = await store.grant(LOGIN_WINDOW_S)
        await store.create(key, {"count": 1, "until": time.time() + LOGIN_WINDOW_S}, lease=lease)
        return
    await store.txn([store.unchanged(key, e.mod_revision)],
                    [store.put_op(key, {**e.value, "count": int(e.value.get("count", 0)) + 1}, lease=e.lease)])


# -- API tokens ----------------------------------------------------------------------------
async def create_token(store: Store, user: str, name: str, ttl_s: float | None) -> dict[str, Any]:
    """A new token for ``user``; the returned ``token`` is the only time its secret is seen."""
    await get_user(store, user)
    if not name or len(name) > 64:
        raise Invalid("a token needs a name of 1-64 characters (what it is for)")
    if ttl_s is not None and not (60 <= ttl_s <= MAX_TOKEN_TTL_S):
        raise Invalid(f"a token's lifetime is 60 s to {MAX_TOKEN_TTL_S // 86400} days, not {ttl_s:g} s")
    tid = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = time.time()
    rec = {"id": tid, "user": user, "name": name, "sha256": _sha(secret), "created": now,
           "expires": now + ttl_s if ttl_s else 0.0}
    await store.put(K.TOKENS + tid, rec)
    return {**public_token(rec), "token": f"{TOKEN_PREFIX}{tid}.{secret}"}


def public_token(t: dict[str, Any]) -> dict[str, Any]:
    return {k: t[k] for k in ("id", "user", "name", "created", "expires")}


async def tokens(store: Store, user: str | None = None) -> list[dict[str, Any]]:
    """Tokens (all, or one user's), without their secrets."""
    return sorted((public_token(e.value) for e in (await store.get_prefix(K.TOKENS)).values()
                   if user is None or e.value.get("user") == user), key=lambda t: t["created"])


async def revoke_token(store: Store, tid: str, user: str | None = None) -> None:
    """Revoke a token (``user``: only if it is theirs)."""
    e = await store.get(K.TOKENS + tid) if re.fullmatch(r"[0-9a-f]{12}", tid) else None
    if e is None or (user is not None and e.value.get("user") != user):
        raise NotFound(f"no token {tid!r}")
    await store.delete(K.TOKENS + tid)


async def by_token(store: Store, token: str) -> Principal:
    m = re.fullmatch(TOKEN_PREFIX + r"([0-9a-f]{12})\.([A-Za-z0-9_-]{20,100})", token)
    e = await store.get(K.TOKENS + m.group(1)) if m else None
    if m is None or e is None or not hmac.compare_digest(e.value.get("sha256", ""), _sha(m.group(2))):
        raise Unauthorized("invalid or revoked API token")
    if e.value.get("expires") and e.value["expires"] < time.time():
        raise Unauthorized("the API token has expired")
    u = await store.get(K.USERS + e.value["user"])
    if u is None:
        raise Unauthorized("the API token's user no longer exists")
    return Principal(user=u.value["name"], role=u.value["role"], via="token")


# -- dashboard sessions --------------------------------------------------------------------
async def open_session(store: Store, user: dict[str, Any]) -> tuple[str, str]:
    """A new session for a logged-in user: (cookie value, CSRF token). It expires with its
    etcd lease, after SESSION_TTL_S."""
    sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    lease = await store.grant(SESSION_TTL_S)
    await store.put(K.SESSIONS + _sha(sid), {"user": user["name"], "csrf": csrf, "created": time.time()}, lease=lease)
    return sid, csrf


async def by_session(store: Store, sid: str) -> Principal:
    e = await store.get(K.SESSIONS + _sha(sid)) if 20 <= len(sid) <= 100 else None
    if e is None:
        raise Unauthorized("not logged in (or the session expired)")
    u = await store.get(K.USERS + e.value["user"])
    if u is None:
        raise Unauthorized("the session's user no longer exists")
    return Principal(user=u.value["name"], role=u.value["role"], via="session", csrf=e.value["csrf"])


async def close_session(store: Store, sid: str) -> None:
    await store.delete(K.SESSIONS + _sha(sid))


def principal_json(p: Principal) -> dict[str, Any]:
    return {k: v for k, v in asdict(p).items() if k != "csrf"}
