"""The REST API over a real etcd, served by a real `vigil api` process over HTTPS (no lab:
tests/integration/apirig.py): every endpoint with each role, tokens (expiry, revocation),
sessions and CSRF, the login throttle, 409 on a stale revision, the CLI's bad inputs as
RFC 9457 problems with etcd unchanged, and events that name who asked."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from vigil.service import access
from vigil.store import keys as K
from vigil.store.etcd import Store

from vigil.lab.standalone import free_port

from apirig import ADMIN_PASSWORD, Rig, api_rig

# (method, path, body, the least role that may): every route of the API
ROUTES: list[tuple[str, str, Any, str]] = [
    ("GET", "/cluster", None, "auditor"),
    ("GET", "/hosts", None, "auditor"),
    ("GET", "/hosts/h1", None, "auditor"),
    ("PUT", "/hosts/h1/maintenance", None, "operator"),
    ("DELETE", "/hosts/h1/maintenance", None, "operator"),
    ("GET", "/datastores", None, "auditor"),
    ("POST", "/datastores", {"name": "ds7", "path": "/srv/ds7"}, "admin"),
    ("POST", "/datastores/ds1/evacuate", {}, "operator"),
    ("GET", "/datastore-clusters", None, "auditor"),
    ("PUT", "/datastore-clusters/c-{role}", {"datastores": ["ds1"]}, "admin"),
    ("DELETE", "/datastore-clusters/c-{role}", None, "admin"),
    ("GET", "/vms", None, "auditor"),
    ("POST", "/vms", {"name": "m-{role}", "power": "off", "disks": [{"datastore": "ds1"}]}, "operator"),
    ("GET", "/vms/base", None, "auditor"),
    ("POST", "/vms/base/start", None, "operator"),
    ("POST", "/vms/base/stop", None, "operator"),
    ("POST", "/vms/base/resize", {"memory_mb": 256}, "operator"),
    ("POST", "/vms/base/migrate", {"to": "h2"}, "operator"),
    ("GET", "/vms/base/migration-targets", None, "auditor"),
    ("POST", "/vms/base/move-disk", {"disk": "disk0", "to": "ds1"}, "operator"),
    ("POST", "/vms/base/repair-disk", None, "operator"),
    ("PUT", "/vms/base/ft", None, "operator"),
    ("DELETE", "/vms/base/ft", None, "operator"),
    ("GET", "/vms/base/events", None, "auditor"),
    ("GET", "/cluster/monitoring", None, "auditor"),
    ("PUT", "/cluster/monitoring", {"preset": "high"}, "admin"),
    ("GET", "/vms/base/monitoring", None, "auditor"),
    ("PUT", "/vms/base/monitoring", {"preset": "custom", "interval_s": 20}, "operator"),
    ("DELETE", "/vms/base/monitoring", None, "operator"),
    ("DELETE", "/vms/gone-{role}", None, "operator"),
    ("GET", "/tasks", None, "auditor"),
    ("GET", "/tasks/base", None, "auditor"),
    ("POST", "/tasks/base/cancel", None, "operator"),
    ("GET", "/rules", None, "auditor"),
    ("POST", "/rules", {"name": "r-{role}", "kind": "affinity", "vms": ["base", "other"]}, "operator"),
    ("DELETE", "/rules/r-{role}", None, "operator"),
    ("GET", "/rules/conflicts", None, "auditor"),
    ("GET", "/hostgroups", None, "auditor"),
    ("POST", "/hostgroups", {"name": "g-{role}", "hosts": ["h1"]}, "operator"),
    ("DELETE", "/hostgroups/g-{role}", None, "operator"),
    ("GET", "/cluster/orchestration", None, "auditor"),
    ("PUT", "/cluster/orchestration", {"ready": "powered-on"}, "admin"),
    ("GET", "/events", None, "auditor"),
    ("GET", "/drs/settings", None, "auditor"),
    ("PUT", "/drs/settings", {"threshold": 4}, "admin"),
    ("GET", "/drs/recommendations", None, "auditor"),
    ("POST", "/drs/apply", {"all": True}, "operator"),
    ("GET", "/users", None, "admin"),
    ("POST", "/users", {"name": "u-{role}", "password": "password-{role}", "role": "auditor"}, "admin"),
    ("DELETE", "/users/u-{role}", None, "admin"),
    ("GET", "/tokens?all=true", None, "admin"),
    ("GET", "/cluster/admission", None, "auditor"),
    ("PUT", "/cluster/admission", {"policy": "off"}, "admin"),
    ("GET", "/cluster/retries", None, "auditor"),
    ("PUT", "/cluster/retries", {"delays": [2, 4, 8, 16, 32, 60]}, "admin"),
    ("GET", "/cluster/settings", None, "auditor"),
    ("GET", "/cluster/settings/drs", None, "auditor"),
    ("PUT", "/cluster/settings/retries", {"delays": [2, 4, 8, 16, 32, 60]}, "admin"),
    ("GET", "/cluster/capacity", None, "auditor"),
    ("GET", "/cluster/what-if?fail=h1", None, "auditor"),
    ("GET", "/cluster/what-if/drs", None, "auditor"),
]
RANK = {r: i for i, r in enumerate(access.ROLES)}


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with api_rig() as r:
        admin = r.client("admin")
        for name in ("base", "other"):
            assert admin.post("/api/v1/vms", json={"name": name, "power": "off",
                                                  "disks": [{"datastore": "ds1"}]}).status_code == 201
        yield r


def call(c: httpx.Client, method: str, path: str, body: Any, role: str) -> httpx.Response:
    fill = lambda x: json.loads(json.dumps(x).replace("{role}", role))  # noqa: E731
    return c.request(method, "/api/v1" + path.replace("{role}", role), json=fill(body) if body is not None else None)


@pytest.mark.parametrize("role", ["auditor", "operator", "admin"])
def test_each_route_with_each_role(rig: Rig, role: str) -> None:
    c = rig.client(role)
    for method, path, body, least in ROUTES:
        before = rig.dump() if method != "GET" else None
        r = call(c, method, path, body, role)
        assert r.status_code < 500, (method, path, r.text)
        if RANK[role] >= RANK[least]:
            assert r.status_code not in (401, 403), (role, method, path, r.text)
        else:
            assert r.status_code == 403, (role, method, path, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert least in r.json()["detail"]
            if before is not None:
                assert rig.dump() == before, (method, path)


def test_nothing_without_credentials_but_health_and_login(rig: Rig) -> None:
    anon = rig.client(None)
    for method, path, body, _ in ROUTES + [("GET", "/auth/me", None, ""), ("GET", "/tokens", None, ""),
                                           ("GET", "/stream", None, "")]:
        r = call(anon, method, path, body, "anon")
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert anon.get("/metrics").status_code == 401
    assert anon.get("/healthz").json() == {"ok": True, "etcd": True}
    assert anon.get("/api/v1/openapi.json").status_code == 200
    bad = httpx.Client(base_url=rig.url, verify=rig.tls(), headers={"Authorization": "Bearer vgl_0123456789ab.nope-nope-nope-nope-nope"})
    assert bad.get("/api/v1/vms").json()["detail"] == "invalid or revoked API token"
    basic = httpx.Client(base_url=rig.url, verify=rig.tls(), headers={"Authorization": "Basic YTpi"})
    assert basic.get("/api/v1/vms").status_code == 401


def test_a_token_expires_and_a_revoked_one_stops_at_once(rig: Rig) -> None:
    admin = rig.client("admin")
    t = admin.post("/api/v1/tokens", json={"name": "short", "ttl_s": 60}).json()
    assert t["token"].startswith("vgl_") and "token" not in admin.get("/api/v1/tokens").json()[0]
    mine = httpx.Client(base_url=rig.url, verify=rig.tls(), headers={"Authorization": f"Bearer {t['token']}"})
    assert mine.get("/api/v1/auth/me").json()["user"] == "admin"

    async def age(s: Store) -> None:  # make it expire now, as time would
        await s.update(K.TOKENS + t["id"], lambda v: {**v, "expires": time.time() - 1})
    rig.run(age)
    r = mine.get("/api/v1/vms")
    assert r.status_code == 401 and r.json()["detail"] == "the API token has expired"

    t2 = admin.post("/api/v1/tokens", json={"name": "revoked"}).json()
    other = httpx.Client(base_url=rig.url, verify=rig.tls(), headers={"Authorization": f"Bearer {t2['token']}"})
    assert other.get("/api/v1/vms").status_code == 200
    assert admin.delete(f"/api/v1/tokens/{t2['id']}").status_code == 200
    assert other.get("/api/v1/vms").json()["detail"] == "invalid or revoked API token"
    # an operator cannot revoke someone else's token, nor see everyone's
    op = rig.client("operator")
    t3 = admin.post("/api/v1/tokens", json={"name": "admin's"}).json()
    assert op.delete(f"/api/v1/tokens/{t3['id']}").status_code == 404
    assert op.get("/api/v1/tokens", params={"all": True}).status_code == 403
    for bad in ({"name": ""}, {"name": "x", "ttl_s": 1}, {"name": "x", "ttl_s": "soon"}):
        assert admin.post("/api/v1/tokens", json=bad).status_code == 422


def test_sessions_cookie_and_csrf(rig: Rig) -> None:
    s = httpx.Client(base_url=rig.url, verify=rig.tls())
    r = s.post("/api/v1/auth/login", json={"user": "operator", "password": "operator-password"})
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=strict" in cookie
    csrf = r.json()["csrf_token"]
    assert s.get("/api/v1/vms").status_code == 200
    refused = s.post("/api/v1/vms/base/stop")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert s.post("/api/v1/vms/base/stop", headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert s.post("/api/v1/vms/base/stop", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert s.get("/api/v1/auth/me").json() == {"user": "operator", "role": "operator", "via": "session",
                                               "csrf_token": csrf}
    assert s.post("/api/v1/auth/logout").status_code == 200
    assert s.get("/api/v1/vms").status_code == 401


def test_failed_logins_are_throttled(rig: Rig) -> None:
    anon = rig.client(None)
    for _ in range(access.LOGIN_MAX_FAILURES):
        r = anon.post("/api/v1/auth/login", json={"user": "auditor", "password": "wrong"})
        assert r.status_code == 401 and r.json()["detail"] == "wrong user name or password"
    r = anon.post("/api/v1/auth/login", json={"user": "auditor", "password": "auditor-password"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert "too many failed logins" in r.json()["detail"]
    # an unknown name answers like a wrong password
    assert anon.post("/api/v1/auth/login", json={"user": "nobody", "password": "x"}).json()["detail"] == \
        "wrong user name or password"

    async def window_ends(s: Store) -> None:
        await s.delete_prefix(K.LOGINFAIL)
    rig.run(window_ends)
    assert anon.post("/api/v1/auth/login", json={"user": "auditor", "password": "auditor-password"}).status_code == 200


def test_a_stale_revision_is_refused_with_409(rig: Rig) -> None:
    admin = rig.client("admin")
    r = admin.get("/api/v1/vms/other")
    rev = r.json()["revision"]
    assert r.headers["etag"] == f'"{rev}"'
    assert admin.post("/api/v1/vms/other/start", headers={"If-Match": f'"{rev}"'}).status_code == 200
    before = rig.dump()
    for method, path in (("POST", "/vms/other/stop"), ("DELETE", "/vms/other"), ("PUT", "/vms/other/ft"),
                         ("POST", "/vms/other/start")):
        r = admin.request(method, "/api/v1" + path, headers={"If-Match": str(rev)})
        assert r.status_code == 409, (path, r.text)
        assert f"changed since revision {rev}" in r.json()["detail"]
    assert rig.dump() == before
    h = admin.get("/api/v1/hosts/h2").json()
    assert admin.put("/api/v1/hosts/h2/maintenance", headers={"If-Match": str(h["revision"] - 1)}).status_code == 409
    assert admin.put("/api/v1/hosts/h2/maintenance", headers={"If-Match": str(h["revision"])}).status_code == 200
    assert admin.put("/api/v1/hosts/h2/maintenance", headers={"If-Match": str(h["revision"])}).status_code == 409
    assert admin.delete("/api/v1/hosts/h2/maintenance").json()["changed"] is True
    assert admin.post("/api/v1/vms/other/stop", headers={"If-Match": "soon"}).status_code == 422


# the CLI's refusals of today, through the API: (method, path, body, status, the CLI's words)
BAD = [
    ("POST", "/vms", {"name": "x", "disks": [{"datastore": "nope"}]}, 422, "unknown datastore 'nope'"),
    ("POST", "/vms", {"name": "x", "restart_priority": "bogus"}, 422, "restart_priority must be one of"),
    ("POST", "/vms", {"name": "x", "isolation_response": "x"}, 422, "isolation_response must be one of"),
    ("POST", "/vms", {"name": "Bad Name!"}, 422, "VM name"),
    ("POST", "/vms", {"name": "x", "memory_mb": 4}, 422, "memory_mb must be between"),
    ("POST", "/vms", {"name": "x", "networks": ["nonet"]}, 422, "unknown network 'nonet'"),
    ("POST", "/vms", {"name": "x", "host": "h9"}, 422, "unknown host 'h9'"),
    ("POST", "/vms", {"name": "base"}, 409, "a VM named 'base' already exists"),
    ("POST", "/vms", {"name": "x", "memory_mb": "lots"}, 422, "memory_mb: Input should be a valid integer"),
    ("POST", "/vms", {"name": "x", "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
    ("POST", "/vms", [1, 2], 422, "Input should be a valid dictionary"),
    ("POST", "/vms/none/start", None, 404, "no VM named 'none'"),
    ("POST", "/vms/base/migrate", {"to": "h9"}, 409, "VM base is not running"),
    ("POST", "/vms/none/migrate", {"to": "h2"}, 404, "no VM named 'none'"),
    ("POST", "/vms/base/move-disk", {"disk": "disk9", "to": "ds1"}, 404, "VM base has no disk 'disk9'"),
    ("POST", "/vms/base/move-disk", {"disk": "disk0", "to": "ds1", "bwlimit_mib_s": -1}, 422, "bwlimit_mib_s"),
    ("PUT", "/hosts/h9/maintenance", None, 404, "unknown host 'h9'"),
    ("POST", "/datastores/ds9/evacuate", {}, 404, "unknown datastore 'ds9'"),
    ("POST", "/datastores/ds1/evacuate", {"to": "ds1"}, 422, "the target datastore is the one being evacuated"),
    ("POST", "/rules", {"name": "r", "kind": "sometimes", "vms": ["base", "other"]}, 422, "kind must be one of"),
    ("POST", "/rules", {"name": "r", "kind": "affinity", "vms": ["base"]}, 422, "at least two different VMs"),
    ("POST", "/rules", {"name": "r", "kind": "affinity", "vms": ["base", "ghost"]}, 422, "no VM named ghost"),
    ("DELETE", "/rules/none", None, 404, "no rule named 'none'"),
    ("POST", "/rules", {"name": "r", "kind": "depends-on", "vms": ["base"], "on": ["base"]}, 422,
     "cannot depend on itself"),
    ("POST", "/rules", {"name": "r", "kind": "must-run-on", "vms": ["base"], "group": "nope"}, 422,
     "no host group named nope"),
    ("POST", "/hostgroups", {"name": "g", "hosts": []}, 422, "hosts"),
    ("PUT", "/cluster/orchestration", {"ready": "soon"}, 422, "ready must be one of"),
    ("PUT", "/cluster/orchestration", {"timeout_s": -1}, 422, "timeout_s must be"),
    ("POST", "/tasks/none/cancel", None, 404, "no running task for 'none'"),
    ("GET", "/tasks/none", None, 404, "no task 'none'"),
    ("POST", "/users", {"name": "x", "password": "short", "role": "auditor"}, 422, "at least 8 characters"),
    ("POST", "/users", {"name": "x", "password": "long-enough", "role": "king"}, 422, "role must be one of"),
    ("POST", "/users", {"name": "admin", "password": "long-enough", "role": "auditor"}, 409, "already exists"),
    ("DELETE", "/users/admin", None, 409, "the last admin"),
    ("GET", "/events?limit=0", None, 422, "limit"),
    ("PUT", "/cluster/monitoring", {"preset": "fast"}, 422, "monitoring preset must be one of"),
    ("PUT", "/cluster/monitoring", {"preset": "high", "interval_s": 0}, 422, "interval_s"),
    ("PUT", "/vms/none/monitoring", {"preset": "high"}, 404, "no VM named 'none'"),
    ("PUT", "/vms/base/monitoring", {"preset": "high", "every": 3}, 422, "every: Extra inputs are not permitted"),
    ("GET", "/nowhere", None, 404, "Not Found"),
]


@pytest.mark.parametrize("method, path, body, status, words", BAD, ids=[f"{m} {p} {s}" for m, p, _, s, _ in BAD])
def test_bad_input_is_a_problem_and_changes_nothing(rig: Rig, method: str, path: str, body: Any, status: int,
                                                    words: str) -> None:
    admin = rig.client("admin")
    before = rig.dump()
    r = admin.request(method, ("/api/v1" if not path.startswith("/nowhere") else "") + path,
                      json=body if body is not None else None)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    p = r.json()
    assert p["status"] == status and p["title"] and p["type"] == "about:blank"
    assert words in p["detail"], p
    assert rig.dump() == before


def test_malformed_requests_get_4xx(rig: Rig) -> None:
    admin = rig.client("admin")
    for content, ctype in ((b"{", "application/json"), (b"\xff\xfe", "application/json"), (b"name=x", "text/plain"),
                           (b"[" * 5000, "application/json"), (b'{"name": "' + b"x" * 100000 + b'"}', "application/json")):
        r = admin.post("/api/v1/vms", content=content, headers={"Content-Type": ctype})
        assert 400 <= r.status_code < 500, (content[:20], r.status_code, r.text[:200])
    assert admin.get("/api/v1/vms/" + "x" * 5000).status_code == 404


def test_events_name_who_asked_and_the_stream_shows_them(rig: Rig) -> None:
    op = rig.client("operator")
    got: list[dict] = []

    def follow() -> None:
        with op.stream("GET", "/api/v1/stream", params={"vm": "other"}, timeout=20) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            name = ""
            for line in r.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:") and name == "event":
                    got.append(json.loads(line[5:]))
                    return
                elif line.startswith("data:") and name == "hello":
                    assert op.post("/api/v1/vms/other/stop").status_code == 200
    follow()
    assert got and got[0]["kind"] == "vm-power-off" and got[0]["user"] == "operator" and got[0]["source"] == "api"
    evs = op.get("/api/v1/events", params={"vm": "other", "kind": "vm-power"}).json()
    assert evs[-1]["user"] == "operator"


def test_metrics_parse_with_prometheus_client(rig: Rig) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = rig.client("auditor").get("/metrics").text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("vigil_host_state", "vigil_vm_state", "vigil_vm_guest_up", "vigil_ha_restarts",
                 "vigil_ha_failover_seconds", "vigil_migration_downtime_seconds", "vigil_etcd_member_up", "vigil_leader"):
        assert name in fams, name
    assert any(s.labels == {"endpoint": rig.etcd} and s.value == 1.0 for s in fams["vigil_etcd_member_up"].samples)


def test_the_cli_through_the_api(rig: Rig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`vigil login` keeps a token; commands then go through the API with today's output
    and exit codes; `vigil logout` revokes it."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "VIGIL_PASSWORD": ADMIN_PASSWORD}
    env.pop("VIGIL_API", None)
    vigil = [os.path.join(os.path.dirname(sys.executable), "vigil")]

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(vigil + list(argv), capture_output=True, text=True, env=env, timeout=60)
    r = run("login", "--api", rig.url, "--ca", rig.ca, "--user", "admin")
    assert r.returncode == 0 and "logged in as admin" in r.stdout, r.stderr
    assert oct((tmp_path / "vigil" / "credentials.json").stat().st_mode & 0o777) == "0o600"
    r = run("vm", "list", "--json")
    assert r.returncode == 0 and {v["name"] for v in json.loads(r.stdout)} >= {"base", "other"}
    r = run("vm", "start", "none")
    assert r.returncode == 1 and r.stderr.strip() == "error: no VM named 'none'" and "Traceback" not in r.stderr
    r = run("cluster", "set", "monitoring", "--preset", "high")
    assert r.returncode == 0 and "high: reset after 30s" in r.stdout, r.stderr
    r = run("vm", "set", "base", "--monitoring", "low", "--max-resets", "1")
    assert r.returncode == 0 and "low: reset after 120s" in r.stdout and "at most 1 resets" in r.stdout, r.stderr
    r = run("vm", "show", "base")
    assert r.returncode == 0 and "monitoring" in r.stdout and "(its own)" in r.stdout, r.stderr
    assert run("vm", "set", "base", "--monitoring", "cluster").returncode == 0
    env["VIGIL_NEW_PASSWORD"] = "cli-user-password"
    assert run("user", "add", "cliuser", "--role", "operator").returncode == 0
    r = run("user", "list", "--json")
    assert {"name": "cliuser", "role": "operator"}.items() <= next(u for u in json.loads(r.stdout) if u["name"] == "cliuser").items()
    r = run("token", "create", "ci", "--days", "1", "--json")
    tok = json.loads(r.stdout)
    assert run("token", "revoke", tok["id"]).returncode == 0
    assert run("user", "delete", "cliuser").returncode == 0
    assert run("logout").returncode == 0
    r = run("vm", "list")
    assert r.returncode == 1 and "no vigil API known" in r.stderr


def test_the_stream_survives_a_slow_client(rig: Rig) -> None:
    """Many writes while a client does not read: the server neither blocks nor fails."""
    admin = rig.client("admin")
    with admin.stream("GET", "/api/v1/stream", timeout=20) as r:
        for i in range(30):
            admin.post("/api/v1/vms/other/" + ("start" if i % 2 else "stop"))
        assert admin.get("/healthz").status_code == 200
        assert r.status_code == 200


def test_any_server_answers(rig: Rig) -> None:
    """Stateless: a second server over the same etcd knows the same tokens and sessions."""
    from apirig import spawn_api, stop

    tls = Path(rig.ca).parent.parent  # the rig's dir: ca/, server-cert.pem, server-key.pem
    port = free_port()
    p = spawn_api(rig.etcd, port, tls / "server-cert.pem", tls / "server-key.pem", tls / "api2.log", rig.ca,
                  rig.etcd_tls)
    try:
        url = f"https://127.0.0.1:{port}"
        s = httpx.Client(base_url=rig.url, verify=rig.tls())
        csrf = s.post("/api/v1/auth/login", json={"user": "admin", "password": ADMIN_PASSWORD}).json()["csrf_token"]
        other = httpx.Client(base_url=url, verify=rig.tls(), cookies=s.cookies)
        assert other.get("/api/v1/auth/me").json()["user"] == "admin"
        assert other.post("/api/v1/vms/other/stop", headers={"X-CSRF-Token": csrf}).status_code == 200
        assert httpx.get(url + "/api/v1/vms", verify=rig.tls(),
                         headers={"Authorization": f"Bearer {rig.tokens['auditor']}"}).status_code == 200
    finally:
        stop(p)


def test_drs_settings_and_recommendations(rig: Rig) -> None:
    admin = rig.client("admin")
    r = admin.put("/api/v1/drs/settings", json={"mode": "manual", "threshold": 2})
    assert r.status_code == 200 and r.json()["mode"] == "manual" and r.json()["threshold"] == 2, r.text
    got = admin.get("/api/v1/drs/settings").json()
    assert got["threshold"] == 2 and got["revision"] > 0 and got["space_threshold"] == 0.8
    bad = admin.put("/api/v1/drs/settings", json={"threshold": 7})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    stale = admin.put("/api/v1/drs/settings", json={"threshold": 3}, headers={"If-Match": "1"})
    assert stale.status_code == 409
    rec = admin.get("/api/v1/drs/recommendations").json()
    assert rec["moves"] == [] and "no DRS round" in rec["reason"]
    assert admin.post("/api/v1/drs/apply", json={"ids": ["nope"]}).status_code == 404
    admin.put("/api/v1/drs/settings", json={"mode": "off"})

def test_datastore_clusters_and_the_datastores_figures(rig: Rig) -> None:
    admin = rig.client("admin")
    r = admin.put("/api/v1/datastore-clusters/gold", json={"datastores": ["ds1"]})
    assert r.status_code == 200 and r.json() == {"name": "gold", "datastores": ["ds1"]}, r.text
    assert admin.put("/api/v1/datastore-clusters/silver", json={"datastores": ["ds1"]}).status_code == 422
    assert admin.put("/api/v1/datastore-clusters/x", json={"datastores": ["nope"]}).status_code == 404
    got = admin.get("/api/v1/datastore-clusters").json()
    assert [(c["name"], c["datastores"]) for c in got] == [("gold", ["ds1"])] and got[0]["latency_ms"] is None
    ds = {d["name"]: d for d in admin.get("/api/v1/datastores").json()}
    assert ds["ds1"]["cluster"] == "gold"
    assert admin.delete("/api/v1/datastore-clusters/gold").status_code == 200
    assert admin.delete("/api/v1/datastore-clusters/gold").status_code == 404
    assert admin.get("/api/v1/datastore-clusters").json() == []


def test_admission_control_refuses_a_power_on_with_its_numbers(rig: Rig) -> None:
    admin = rig.client("admin")
    for bad in ({"policy": "slots", "failures": -1}, {"policy": "failover-hosts", "hosts": ["nope"]},
                {"policy": "sideways"}):
        r = admin.put("/api/v1/cluster/admission", json=bad)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    assert admin.get("/api/v1/cluster/capacity").json()["policy"] == "off"
    r = admin.put("/api/v1/cluster/admission", json={"policy": "slots", "failures": 1, "slot_memory_mb": 100000})
    assert r.status_code == 200 and r.json()["policy"] == "slots", r.text
    try:
        assert admin.post("/api/v1/vms", json={"name": "big", "power": "off", "memory_mb": 256,
                                               "disks": [{"datastore": "ds1"}]}).status_code == 201
        before = rig.dump()
        r = admin.post("/api/v1/vms/big/start")
        assert r.status_code == 409, r.text
        assert r.json()["detail"].startswith("admission control (slots, 1 host failure to tolerate) refuses "
                                             "powering on big (256 MiB, 1 vCPU): it needs 1 slot"), r.text
        assert rig.dump() == before
        c = admin.get("/api/v1/cluster/capacity").json()
        assert c["slot_memory_mb"] == 100000 and c["slots"] == 0
        w = admin.get("/api/v1/cluster/what-if", params={"fail": ["h1"]}).json()
        assert w["failed"] == ["h1"]
        assert admin.get("/api/v1/cluster/what-if", params={"fail": ["nope"]}).status_code == 422
        d = admin.get("/api/v1/cluster/what-if/drs").json()
        assert d["mode"] == "off" and isinstance(d["moves"], list) and "imbalance" in d, d
    finally:
        admin.put("/api/v1/cluster/admission", json={"policy": "off"})
        admin.delete("/api/v1/vms/big", params={"force": True})

def test_rules_host_groups_and_orchestration_through_the_cli(rig: Rig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`vigil rule` (depends-on, VM-host rules, host groups, conflicts) and `vigil cluster
    set orchestration`, through the API."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "VIGIL_PASSWORD": ADMIN_PASSWORD}
    env.pop("VIGIL_API", None)
    vigil = [os.path.join(os.path.dirname(sys.executable), "vigil")]

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(vigil + list(argv), capture_output=True, text=True, env=env, timeout=60)
    assert run("login", "--api", rig.url, "--ca", rig.ca, "--user", "admin").returncode == 0
    r = run("rule", "group-create", "cli-g", "--hosts", "h1,h9")
    assert r.returncode == 0 and "host group cli-g created" in r.stdout, r.stderr
    r = run("rule", "create", "cli-dep", "--kind", "depends-on", "--vms", "other", "--on", "base")
    assert r.returncode == 0, r.stderr
    r = run("rule", "create", "cli-loop", "--kind", "depends-on", "--vms", "base", "--on", "other")
    assert r.returncode == 1 and "dependency cycle: base -> other -> base" in r.stderr, r.stderr
    r = run("rule", "create", "cli-pin", "--kind", "must-run-on", "--vms", "base", "--group", "cli-g")
    assert r.returncode == 0 and "rule cli-pin created" in r.stdout, r.stderr
    r = run("rule", "conflicts")
    assert r.returncode == 0 and "host group cli-g: no host named h9 (yet)" in r.stdout, r.stdout
    r = run("rule", "list", "--json")
    got = {x["name"]: x for x in json.loads(r.stdout)}
    assert got["cli-dep"]["on"] == ["base"] and got["cli-pin"]["group"] == "cli-g"
    r = run("rule", "group-delete", "cli-g")
    assert r.returncode == 1 and "named by rule cli-pin" in r.stderr, r.stderr
    for name in ("cli-pin", "cli-dep"):
        assert run("rule", "delete", name).returncode == 0
    assert run("rule", "group-delete", "cli-g").returncode == 0
    r = run("cluster", "set", "orchestration", "--ready", "guest", "--timeout", "45")
    assert r.returncode == 0 and "ready when guest" in r.stdout and "timeout 45s" in r.stdout, r.stderr
    r = run("cluster", "set", "orchestration", "--tier", "high", "--ready", "powered-on")
    assert r.returncode == 0 and "tier high: powered-on" in r.stdout, r.stderr
    r = run("cluster", "orchestration", "--json")
    assert json.loads(r.stdout)["tiers"]["high"] == {"ready": "powered-on", "delay_s": 0.0, "timeout_s": 45.0}
    r = run("cluster", "set", "orchestration", "--ready", "soon")
    assert r.returncode == 1 and "ready must be one of" in r.stderr, r.stderr
    assert run("logout").returncode == 0
