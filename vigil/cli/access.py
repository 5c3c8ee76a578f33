"""`vigil login` / `logout`, `vigil user ...` and `vigil token ...`: identities, through the API."""
from __future__ import annotations

import socket
import time
from typing import Optional

import typer
from rich.table import Table

from vigil.cli.client import API_OPT, Api, Target, connect, credentials_file, resolve, save_credentials
from vigil.cli.common import JSON_OPT, console, fail, friendly, print_json

user_app = typer.Typer(no_args_is_help=True, help="Users (admin only, except your own password)")
token_app = typer.Typer(no_args_is_help=True, help="API tokens (for scripts, Prometheus, CI)")
ROLE_HELP = "admin (everything, users too) | operator (VMs, migrations, maintenance, FT, rules) | auditor (read only)"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "never"


@friendly
def login(
    user: str = typer.Option(..., "--user", "-u", prompt=True),
    password: str = typer.Option(..., "--password", prompt=True, hide_input=True,
                                 envvar="VIGIL_PASSWORD", help="(prompted; or $VIGIL_PASSWORD)"),
    ca: Optional[str] = typer.Option(None, "--ca", help="CA certificate to verify the API with (the cluster's)"),
    days: float = typer.Option(30, "--days", help="how long the token is valid"),
    api: Optional[str] = API_OPT,
) -> None:
    """Log in: trade a password for an API token, kept in ~/.config/vigil/credentials.json."""
    t = resolve(api)
    t = Target(t.urls, "", ca or t.ca, t.origin)
    tok = Api(t).post("/auth/token", {"user": user, "password": password, "name": f"cli@{socket.gethostname()}",
                                      "ttl_s": days * 86400})
    path = save_credentials(t.urls, tok["token"], t.ca, user)
    console.print(f"logged in as {user} at {t.urls[0]}; token {tok['id']} valid until {_when(tok['expires'])} "
                  f"(saved in {path})")


@friendly
def logout(api: Optional[str] = API_OPT) -> None:
    """Revoke the saved token and forget it."""
    path = credentials_file()
    if not path.exists():
        fail("not logged in")
    client = connect(api)
    me = client.get("/auth/me")
    tid = client.target.token.removeprefix("vgl_").split(".", 1)[0]
    client.delete(f"/tokens/{tid}")
    path.unlink()
    console.print(f"logged out ({me['user']}); token {tid} revoked")


@user_app.command("list")
@friendly
def user_list(api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """Users and their roles."""
    us = connect(api).get("/users")
    if as_json:
        return print_json(us)
    t = Table(title="users")
    for col in ("user", "role", "created"):
        t.add_column(col)
    for u in us:
        t.add_row(u["name"], u["role"], _when(u["created"]))
    console.print(t)


@user_app.command("add")
@friendly
def user_add(name: str, role: str = typer.Option("auditor", "--role", help=ROLE_HELP),
             password: str = typer.Option(..., "--password", prompt=True, hide_input=True, confirmation_prompt=True,
                                          envvar="VIGIL_NEW_PASSWORD", help="(prompted; or $VIGIL_NEW_PASSWORD)"),
             api: Optional[str] = API_OPT) -> None:
    """Add a user with a password (at least 8 characters)."""
    u = connect(api).post("/users", {"name": name, "password": password, "role": role})
    console.print(f"user {u['name']} added ({u['role']})")


@user_app.command("delete")
@friendly
def user_delete(name: str, api: Optional[str] = API_OPT) -> None:
    """Delete a user and their tokens."""
    console.print(connect(api).delete(f"/users/{name}")["message"])


@user_app.command("passwd")
@friendly
def user_passwd(name: str, password: str = typer.Option(..., "--password", prompt=True, hide_input=True,
                                                        confirmation_prompt=True, envvar="VIGIL_NEW_PASSWORD"),
                api: Optional[str] = API_OPT) -> None:
    """Set a user's password (yours, or as an admin anyone's)."""
    console.print(connect(api).put(f"/users/{name}/password", {"password": password})["message"])


@token_app.command("create")
@friendly
def token_create(name: str = typer.Argument(..., help="what it is for"),
                 days: Optional[float] = typer.Option(None, "--days", help="valid this long (default: until revoked)"),
                 api: Optional[str] = API_OPT, as_json: bool = JSON_OPT) -> None:
    """A new token with your role. Its secret is printed this once."""
    t = connect(api).post("/tokens", {"name": name, "ttl_s": days * 86400 if days else None})
    if as_json:
        return print_json(t)
    console.print(f"token {t['id']} ({t['name']}) for {t['user']}, expires {_when(t['expires'])}:")
    console.print(t["token"], highlight=False, soft_wrap=True)
    console.print("[dim]use it as 'Authorization: Bearer <token>' (or VIGIL_TOKEN); it is not shown again[/]")


@token_app.command("list")
@friendly
def token_list(all_: bool = typer.Option(False, "--all", help="everyone's (admin)"), api: Optional[str] = API_OPT,
               as_json: bool = JSON_OPT) -> None:
    """Your tokens (never their secrets)."""
    ts = connect(api).get("/tokens", all=all_ or None)
    if as_json:
        return print_json(ts)
    t = Table(title="tokens")
    for col in ("id", "user", "name", "created", "expires"):
        t.add_column(col)
    for x in ts:
        t.add_row(x["id"], x["user"], x["name"], _when(x["created"]), _when(x["expires"]))
    console.print(t)


@token_app.command("revoke")
@friendly
def token_revoke(tid: str, api: Optional[str] = API_OPT) -> None:
    """Revoke a token: it stops working at once."""
    console.print(connect(api).delete(f"/tokens/{tid}")["message"])
