"""The CLI's way to the cluster: the REST API, with the credentials of `vigil login`.

Where the API is, in order: ``--api`` / ``$VIGIL_API`` (URLs, comma separated: the next
is tried when one does not answer), the URL `vigil login` saved, the lab's servers (root on
the lab's machine: the lab keeps their URLs, CA and an admin token in /run/vigil-lab,
readable by root only). The token: ``$VIGIL_TOKEN``, `vigil login`'s, or the lab's.
"""
from __future__ import annotations

import json
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx
import typer

from vigil.model import SpecError

API_OPT = typer.Option(None, "--api", envvar="VIGIL_API",
                       help="the vigil API's URL(s), comma separated (default: vigil login's, else the lab's)")
LAB_API_FILE = Path("/run/vigil-lab/api.json")
READ_RETRY_S = 10.0


def credentials_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vigil" / "credentials.json"


class ApiError(SpecError):
    """The API refused the request: its problem's detail is what the user reads."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class ApiUnreachable(OSError):
    """No API server answered."""


@dataclass(frozen=True)
class Target:
    urls: tuple[str, ...]
    token: str
    ca: str | None  # CA bundle to verify the server with (None: the system's)
    origin: str  # where the settings came from, for messages


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def resolve(api: Optional[str]) -> Target:
    saved = _read_json(credentials_file())
    lab = _read_json(LAB_API_FILE) if os.access(LAB_API_FILE, os.R_OK) else {}
    token = os.environ.get("VIGIL_TOKEN", "")
    ca = os.environ.get("VIGIL_CA") or None
    if api:
        urls = tuple(u.strip().rstrip("/") for u in api.split(",") if u.strip())
        same = lambda d: bool(set(urls) & set(d.get("urls", [])))  # noqa: E731
        src = saved if same(saved) else lab if same(lab) else {}
        return Target(urls, token or src.get("token", ""), ca or src.get("ca"), "--api")
    for src, origin in ((saved, str(credentials_file())), (lab, "the lab")):
        if src.get("urls"):
            return Target(tuple(src["urls"]), token or src.get("token", ""), ca or src.get("ca"), origin)
    raise ApiUnreachable("no vigil API known: give --api URL (or VIGIL_API) and run 'vigil login', "
                         "or bring the lab up ('vigil lab up')")


class Api:
    """Blocking calls to the API; an error answer raises ApiError with the server's words."""

    def __init__(self, target: Target, timeout: float = 15.0) -> None:
        self.target = target
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
        verify = ssl.create_default_context(cafile=target.ca) if target.ca else True
        self.http = httpx.Client(verify=verify, headers=headers, timeout=timeout)
        self._good = 0  # index of the URL that answered last

    def _order(self) -> list[str]:
        u = list(self.target.urls)
        return u[self._good:] + u[:self._good]

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One call, to the first server that answers. A read that gets 503 (that server's
        etcd member just went away) is asked again of the next server, for READ_RETRY_S at
        most; a write is not repeated (it may have been applied), its 503 is the answer."""
        errors = []
        deadline = time.monotonic() + READ_RETRY_S
        while True:
            for url in self._order():
                try:
                    r = self.http.request(method, url + "/api/v1" + path, **kw)
                except httpx.TransportError as e:
                    errors.append(f"{url}: {e or type(e).__name__}")
                    continue
                self._good = self.target.urls.index(url)
                if r.status_code == 503 and method == "GET" and time.monotonic() < deadline:
                    self._good = (self._good + 1) % len(self.target.urls)
                    break
                if r.status_code >= 400:
                    raise ApiError(r.status_code, _detail(r))
                return r
            else:
                break
            time.sleep(0.5)
        raise ApiUnreachable("cannot reach the vigil API (" + "; ".join(errors[-len(self.target.urls):]) + ")"
                             + ("" if self.target.origin == "--api" else f" [from {self.target.origin}]"))

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json=body if body is not None else {}, **kw).json()

    def put(self, path: str, body: Any = None) -> Any:
        return self.request("PUT", path, json=body).json()

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params={k: v for k, v in params.items() if v is not None}).json()

    def stream(self, path: str, **params: Any) -> Iterator[tuple[str, Any]]:
        """Server-Sent Events: (event name, decoded data) as they come."""
        for url in self._order():
            try:
                with self.http.stream("GET", url + "/api/v1" + path, params=params, timeout=None) as r:
                    if r.status_code >= 400:
                        r.read()
                        raise ApiError(r.status_code, _detail(r))
                    name = ""
                    for line in r.iter_lines():
                        if line.startswith("event:"):
                            name = line[6:].strip()
                        elif line.startswith("data:"):
                            yield name, json.loads(line[5:])
                return
            except httpx.TransportError:
                continue
        raise ApiUnreachable("cannot reach the vigil API for its event stream")


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
        return str(body.get("detail") or body.get("title") or r.reason_phrase)
    except ValueError:
        return f"{r.status_code} {r.reason_phrase}"


def connect(api: Optional[str]) -> Api:
    return Api(resolve(api))


def save_credentials(urls: tuple[str, ...], token: str, ca: str | None, user: str) -> Path:
    path = credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"urls": list(urls), "token": token, "ca": ca, "user": user}, f, indent=2)
    os.replace(tmp, path)
    return path
