"""The dashboard in a real browser (the system's Chromium, driven by Playwright) against the
real lab: it shows the cluster, follows a host's power loss and the HA restarts without a
reload, starts a migration from its host picker and shows its progress to the end, and
shows an auditor no action at all (and the API refuses the auditor's writes).

TLS: the browser is not told to ignore certificate errors. Python checks each API server's
certificate against the lab CA (chain and address), then Chromium is given exactly those
servers' public keys (--ignore-certificate-errors-spki-list): Chromium on Linux trusts an
extra CA only through an NSS database, and certutil, which writes one, is not installed.

Screenshots go to test-output/dashboard/ (ignored by git).
"""
from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import httpx
import pytest

from browsercheck import verified_spki

from vigil.lab import observe
from vigil.lab.api_servers import read as read_api_file
from vigil.lab.scenario import create_lab_vms

from labcheck import LAB_MARKS, running_lab, vigil_cmd

pytestmark = [*LAB_MARKS, pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"),
                                             reason="needs the system Chromium (scripts/install-deps.sh)")]

CHROMIUM = "/usr/bin/chromium"
OUT = Path(__file__).resolve().parents[2] / "test-output" / "dashboard"
VIEW = {"width": 1280, "height": 800}
SLOW = 150_000  # ms: a failover or a migration on a loaded 2-core machine
# Every button the page builds for a write (VM names are buttons too: they open the VM's panel).
ACTIONS = "#dash button:not(.vmname), #panel button:not(#panel-close)"


def bg(fn, *args, **kw):  # type: ignore[no-untyped-def]
    """``fn`` in a thread of its own: the lab's helpers run asyncio, which Playwright's sync
    API (an event loop of its own in this thread) does not allow here."""
    with ThreadPoolExecutor(1) as ex:
        return ex.submit(fn, *args, **kw).result()


@pytest.fixture
def lab() -> Iterator[object]:
    with running_lab(hosts=3, datastores=1, memory_mb=1536, reboot_delay_s=60.0) as lab:
        yield lab


@pytest.fixture
def browser(lab):  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    api = read_api_file()
    pins = ",".join(verified_spki(u, api["ca"]) for u in api["urls"])
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", f"--ignore-certificate-errors-spki-list={pins}"])
        try:
            yield b
        finally:
            b.close()


def log_in(browser, url: str, user: str, password: str):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    ctx = browser.new_context(viewport=VIEW, ignore_https_errors=False)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.get_by_test_id("login-user").fill(user)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("who")).to_contain_text(user, timeout=30_000)
    expect(page.get_by_test_id("live")).to_have_attribute("data-live", "on", timeout=30_000)
    return page, errors


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / f"{name}.png"))


def test_dashboard_follows_failover_migrates_and_hides_actions_from_an_auditor(lab, browser):
    from playwright.sync_api import expect

    if OUT.exists():
        shutil.rmtree(OUT)
    api = read_api_file()
    url = api["urls"][0]  # host1's server: host2 loses its power below
    assert urlparse(url).hostname == "10.77.0.1", api["urls"]
    bg(create_lab_vms, ["d1", "d2"], hosts=["host2"], stagger_s=0.5)
    bg(create_lab_vms, ["m1"], hosts=["host3"], stagger_s=0)
    bg(observe.wait_for, "VMs running", lambda: observe.running_vms_ok(["d1", "d2", "m1"]), 180)
    tls = ssl.create_default_context(cafile=api["ca"])

    # The admin sees the three hosts and the VMs.
    page, errors = log_in(browser, url, api["user"], api["password"])
    for h in ("host1", "host2", "host3"):
        expect(page.get_by_test_id(f"host-{h}")).to_have_attribute("data-state", "running", timeout=30_000)
    for v, h in (("d1", "host2"), ("d2", "host2"), ("m1", "host3")):
        row = page.get_by_test_id(f"vm-{v}")
        expect(row).to_have_attribute("data-state", "running", timeout=30_000)
        expect(row).to_have_attribute("data-host", h)
    expect(page.get_by_test_id("etcd").locator('[data-healthy="true"]')).to_have_count(3, timeout=30_000)
    # the cluster's policies, as set (defaults here): DRS and VM monitoring off
    expect(page.get_by_test_id("policy-drs")).to_have_attribute("data-mode", "off", timeout=30_000)
    expect(page.get_by_test_id("policy-monitoring")).to_have_text("off")
    expect(page.get_by_test_id("policy-orchestration")).to_contain_text("ready when allocated")
    shot(page, "1-admin-overview")

    # host2 loses its power: the page shows it failed and its VMs running elsewhere, by itself.
    page.evaluate("window.__sameDocument = true")
    r = subprocess.run(vigil_cmd() + ["lab", "fault", "power-off", "host2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    expect(page.get_by_test_id("host-host2")).to_have_attribute("data-state", "failed", timeout=SLOW)
    shot(page, "2-host2-failed")
    for v in ("d1", "d2"):
        row = page.get_by_test_id(f"vm-{v}")
        expect(row).to_have_attribute("data-host", re.compile("^host[13]$"), timeout=SLOW)
        expect(row).to_have_attribute("data-state", "running", timeout=SLOW)
    expect(page.get_by_test_id("events")).to_contain_text("host2", timeout=30_000)
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    shot(page, "3-vms-restarted-elsewhere")

    # A migration from the host picker: host2 (off) is offered greyed with its reason.
    page.get_by_test_id("migrate-m1").click()
    dialog = page.get_by_test_id("migrate-dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("target-host1")).to_have_attribute("data-ok", "true", timeout=30_000)
    expect(page.get_by_test_id("target-host2")).to_have_attribute("data-ok", "false")
    expect(page.get_by_test_id("target-input-host2")).to_be_disabled()
    expect(page.get_by_test_id("target-host3")).to_have_attribute("data-ok", "false")  # where it runs
    page.get_by_test_id("target-input-host1").check()
    shot(page, "4-migration-picker")
    page.get_by_test_id("migrate-go").click()
    bar = page.get_by_test_id("task-m1")
    expect(bar).to_be_visible(timeout=30_000)
    expect(bar).to_have_attribute("data-state", "done", timeout=SLOW)
    expect(bar).to_have_attribute("data-pct", "100")
    expect(page.get_by_test_id("vm-m1")).to_have_attribute("data-host", "host1", timeout=60_000)
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    page.get_by_test_id("open-m1").click()
    expect(page.get_by_test_id("vm-events")).to_contain_text("m1", timeout=30_000)
    shot(page, "5-migration-done-vm-panel")
    assert page.locator(ACTIONS).count() > 0  # the admin has them
    assert not errors, errors

    # An auditor, in a fresh context: everything visible, no action anywhere; writes refused.
    r2 = httpx.post(url + "/api/v1/users", verify=tls, timeout=30, headers={"Authorization": f"Bearer {api['token']}"},
                    json={"name": "watcher", "password": "watcher-password-1", "role": "auditor"})
    assert r2.status_code == 201, r2.text
    audit, audit_errors = log_in(browser, url, "watcher", "watcher-password-1")
    expect(audit.get_by_test_id("vm-m1")).to_have_attribute("data-host", "host1", timeout=30_000)
    expect(audit.get_by_test_id("host-host2")).to_have_attribute("data-state", "failed")
    expect(audit.get_by_test_id("task-m1")).to_have_attribute("data-state", "done")
    assert audit.locator(ACTIONS).count() == 0
    audit.get_by_test_id("open-m1").click()
    expect(audit.get_by_test_id("vm-facts")).to_be_visible()
    expect(audit.get_by_test_id("vm-events")).to_contain_text("m1", timeout=30_000)
    assert audit.locator(ACTIONS).count() == 0
    shot(audit, "6-auditor-no-actions")
    status = audit.evaluate("""async () => {
        const me = await (await fetch('/api/v1/auth/me')).json();
        const r = await fetch('/api/v1/vms/m1/stop', {method: 'POST', headers: {'X-CSRF-Token': me.csrf_token}});
        return [me.role, r.status, (await r.json()).detail];
    }""")
    assert status[:2] == ["auditor", 403], status
    assert bg(observe.running_vms_ok, ["m1"])  # still running where it was
    assert not audit_errors, audit_errors
