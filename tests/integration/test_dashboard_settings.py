"""The dashboard's Policies and Rules views and the measured load, in a real browser (the
system's Chromium through Playwright) against a real `vigil api` over a real etcd (no lab:
apirig): an admin edits DRS's settings, a refused value shown in the form with nothing
written, then saved and read back; the rules with the one VMs run against marked, one
rule created and one deleted from the page; the load agents reported, per host and VM;
an auditor sees it all and no button.

TLS as in test_dashboard.py: Chromium is given the API server's public key once Python
checked its certificate against the rig's CA. Screenshots go to test-output/dashboard-settings/.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from browsercheck import verified_spki

from vigil.store import keys as K
from vigil.store.etcd import Store

from apirig import ADMIN_PASSWORD, Rig, api_rig

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"),
                                reason="needs the system Chromium (scripts/install-deps.sh)")

CHROMIUM = "/usr/bin/chromium"
OUT = Path(__file__).resolve().parents[2] / "test-output" / "dashboard-settings"
ACTIONS = "#dash button:not(.vmname), #panel button:not(#panel-close)"
T = 30_000


def bg(fn, *args):  # type: ignore[no-untyped-def]
    """``fn`` in a thread of its own: the rig's etcd calls run asyncio, which Playwright's
    sync API (an event loop of its own in this thread) does not allow here."""
    with ThreadPoolExecutor(1) as ex:
        return ex.submit(fn, *args).result()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with api_rig() as r:
        admin = r.client("admin")
        for name in ("base", "other"):
            assert admin.post("/api/v1/vms", json={"name": name, "power": "off", "memory_mb": 512, "vcpus": 2,
                                                  "disks": [{"datastore": "ds1"}]}).status_code == 201
        assert admin.post("/api/v1/hostgroups", json={"name": "first", "hosts": ["h1"]}).status_code == 201
        assert admin.post("/api/v1/rules", json={"name": "apart", "kind": "anti-affinity",
                                                 "vms": ["base", "other"]}).status_code == 201
        assert admin.post("/api/v1/rules", json={"name": "not-first", "kind": "should-not-run-on",
                                                 "vms": ["base"], "group": "first"}).status_code == 201

        async def agents_report(s: Store) -> None:  # base runs on h1, as h1's agent measured
            await s.put(K.OWN + "base", "h1")
            await s.put(K.LOAD + "h1", {"time": 1.0, "cpus": 2, "memory_mb": 1024, "cpu": 1.0, "memory_used_mb": 300,
                                        "vms": {"base": {"cpu": 0.5, "memory_mb": 200}},
                                        "datastores": {"ds1": {"size_mb": 10240, "used_mb": 8704}}})
        r.run(agents_report)
        yield r


@pytest.fixture(scope="module")
def browser(rig: Rig):  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", f"--ignore-certificate-errors-spki-list={verified_spki(rig.url, rig.ca)}"])
        try:
            yield b
        finally:
            b.close()


def log_in(browser, url: str, user: str, password: str):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1280, "height": 1400}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: d.accept())
    page.goto(url + "/")
    expect(page.get_by_test_id("login-form")).to_be_visible(timeout=60_000)  # a loaded machine: the first page is slow
    page.get_by_test_id("login-user").fill(user)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("who")).to_contain_text(user, timeout=T)
    return page, errors


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)


def test_policies_rules_and_load_in_the_dashboard(rig: Rig, browser) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    api = rig.client("admin")
    page, errors = log_in(browser, rig.url, "admin", ADMIN_PASSWORD)

    # the measured load: h1 uses one of its 2 cores (50 %), base half of its 2 vCPUs
    expect(page.get_by_test_id("load-h1")).to_have_attribute("data-cpu-pct", "50", timeout=T)
    expect(page.get_by_test_id("load-h1")).to_have_attribute("data-memory-mb", "300")
    expect(page.get_by_test_id("load-h2")).to_have_text("-")
    expect(page.get_by_test_id("load-base")).to_have_attribute("data-cpu-pct", "25")
    expect(page.get_by_test_id("load-base")).to_have_attribute("data-memory-mb", "200")
    # the datastores as Storage DRS sees them: space as the agents report it (85 % used)
    expect(page.get_by_test_id("ds-space-ds1")).to_have_attribute("data-used", "8704", timeout=T)
    expect(page.get_by_test_id("ds-space-ds1")).to_have_attribute("data-total", "10240")
    expect(page.get_by_test_id("ds-ds1")).to_contain_text("h1")
    page.get_by_test_id("open-base").click()
    expect(page.get_by_test_id("panel-load")).to_have_attribute("data-cpu-pct", "25", timeout=T)
    page.get_by_test_id("panel-close").click()

    # Policies: all five shown; DRS edited with a bad value first
    for name in ("admission", "retries", "monitoring", "orchestration", "drs"):
        expect(page.get_by_test_id(f"setting-{name}")).to_be_visible(timeout=T)
    expect(page.get_by_test_id("setting-summary-drs")).to_have_text("off")
    before = bg(rig.dump)
    page.get_by_test_id("setting-edit-drs").click()
    page.get_by_test_id("setting-drs-mode").select_option("manual")
    page.get_by_test_id("setting-drs-max_moves").fill("-5")
    page.get_by_test_id("setting-save-drs").click()
    expect(page.get_by_test_id("setting-error-drs")).to_contain_text("max_moves", timeout=T)
    expect(page.get_by_test_id("setting-error-drs")).to_contain_text("422")
    assert bg(rig.dump) == before
    shot(page, "1-drs-refused")
    page.get_by_test_id("setting-drs-max_moves").fill("2")
    page.get_by_test_id("setting-save-drs").click()
    expect(page.get_by_test_id("setting-summary-drs")).to_have_text("manual, threshold 3", timeout=T)
    expect(page.get_by_test_id("setting-value-drs-max_moves")).to_have_text("2")
    got = api.get("/api/v1/cluster/settings/drs").json()
    assert (got["value"]["mode"], got["value"]["max_moves"], got["stored"]["mode"]) == ("manual", 2, "manual"), got
    assert api.get("/api/v1/drs/settings").json()["mode"] == "manual"
    shot(page, "2-drs-saved")
    # a monitoring preset chosen brings its own values (not the ones shown for the old preset)
    page.get_by_test_id("setting-edit-monitoring").click()
    page.get_by_test_id("setting-monitoring-preset").select_option("high")
    page.get_by_test_id("setting-save-monitoring").click()
    expect(page.get_by_test_id("setting-summary-monitoring")).to_contain_text("high: reset after 30s", timeout=T)
    assert api.get("/api/v1/cluster/monitoring").json()["interval_s"] == 30

    # Rules: base runs on h1, against not-first: marked; apart is kept
    expect(page.get_by_test_id("rule-not-first")).to_have_attribute("data-conflict", "true", timeout=T)
    expect(page.get_by_test_id("rule-apart")).to_have_attribute("data-conflict", "false")
    expect(page.get_by_test_id("rule-conflicts")).to_contain_text("base runs on h1")
    expect(page.get_by_test_id("hostgroup-first")).to_contain_text("h1")
    page.get_by_test_id("rule-name").fill("together")
    page.get_by_test_id("rule-kind").select_option("depends-on")
    page.get_by_test_id("rule-vms").fill("other")
    page.get_by_test_id("rule-on").fill("base")
    page.get_by_test_id("rule-create").click()
    expect(page.get_by_test_id("rule-together")).to_have_attribute("data-kind", "depends-on", timeout=T)
    assert {r["name"] for r in api.get("/api/v1/rules").json()} == {"apart", "not-first", "together"}
    page.get_by_test_id("rule-delete-not-first").click()
    expect(page.get_by_test_id("rule-not-first")).to_have_count(0, timeout=T)
    expect(page.get_by_test_id("rule-conflicts")).to_have_attribute("data-count", "0", timeout=T)
    assert {r["name"] for r in api.get("/api/v1/rules").json()} == {"apart", "together"}
    shot(page, "3-rules")
    assert not errors, errors

    # an auditor sees the policies and rules, and no button at all
    audit, audit_errors = log_in(browser, rig.url, "auditor", "auditor-password")
    expect(audit.get_by_test_id("setting-summary-drs")).to_have_text("manual, threshold 3", timeout=T)
    expect(audit.get_by_test_id("rule-together")).to_be_visible(timeout=T)
    expect(audit.get_by_test_id("load-h1")).to_have_attribute("data-cpu-pct", "50")
    assert audit.locator(ACTIONS).count() == 0
    assert audit.get_by_test_id("setting-edit-drs").count() == 0 and audit.get_by_test_id("rule-form").count() == 0
    shot(audit, "4-auditor")
    assert not audit_errors, audit_errors
