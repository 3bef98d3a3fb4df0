"""`warden dashboard` in a real browser: Debian's headless chromium, driven by Playwright (the
browser the system has; Playwright's own download is never used). The page loads the fleet from a
real server over a real registry, monitor store and rollout store; a device going offline in the
monitor's store and a rollout member advancing through Store.set_member show on the open page
without a reload; a failure reason holding markup shows as text; a device's page draws its vitals'
sparklines. A screenshot goes to the test's tmp_path."""
import os
import time
from pathlib import Path

import pytest

from support.dashboard import Running, fill
from warden.monitor.store import Store as MonitorStore
from warden.rollout.store import Store as RolloutStore
from warden.state import State

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                                "(/usr/bin/chromium; `make setup` installs it with apt-get)")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOSTILE = '<img src=x onerror="document.title=\'owned\'">'


@pytest.fixture
def st(tmp_path, monkeypatch):
    monkeypatch.delenv("WARDEN_STATE", raising=False)
    s = State(tmp_path / "st")
    s.ensure()
    fill(s)
    return s


def test_page_follows_the_fleet_and_a_rollout(st, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with Running(st) as srv, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=str(CHROMIUM),
                                                    headless=True, args=ARGS)
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            expect.set_options(timeout=5000)
            page.goto(srv.url)
            conn_b = page.locator('#fleet tr[data-thing="dev-b"] td.conn')
            conn_a = page.locator('#fleet tr[data-thing="dev-a"] td.conn')
            done = page.locator('#rollouts tr[data-rollout="r1"] td.count-succeeded')
            expect(conn_a).to_have_text("online")
            expect(conn_b).to_have_text("offline")
            expect(done).to_have_text("1")
            expect(page.locator('#fleet tr[data-thing="dev-a"] td.alerts')).to_have_text("heap-low")

            # dev-a goes offline (as the monitor records it), the canary's stage moves on
            with MonitorStore(st) as mon:
                mon.add_point("dev-a", "status", time.time(), {"state": "offline", "since": time.time(), "reason": "lwt"})
            with RolloutStore(st) as ro:
                ro.set_member("r1", "dev-b", "succeeded", started=True, finished=True)
                ro.set_member("r1", "dev-c", "failed", HOSTILE, finished=True)
            expect(conn_a).to_have_text("offline")
            expect(done).to_have_text("2")
            expect(page.locator('#rollouts tr[data-rollout="r1"] td.count-failed')).to_have_text("1")
            page.screenshot(path=str(tmp_path / "fleet.png"), full_page=True)

            # the rollout's page: per stage, per device, the reason as text, never as markup
            page.goto(srv.url + "#/rollout/r1")
            expect(page.locator('#stages tr[data-stage="main"] td.count-succeeded')).to_have_text("1")
            expect(page.locator('#members tr[data-thing="dev-c"] td.reason')).to_have_text(HOSTILE)
            assert page.locator("#main img").count() == 0 and page.title() != "owned"

            # a device's page: its vitals as sparklines
            page.goto(srv.url + "#/device/dev-a")
            expect(page.locator("#device-conn")).to_have_text("offline")
            line = page.locator('#vitals [data-series="hf"] polyline')
            expect(line).to_have_count(1)
            assert len(line.get_attribute("points").split()) == 5
            page.screenshot(path=str(tmp_path / "device.png"), full_page=True)
        finally:
            ctx.close()
    assert (tmp_path / "fleet.png").stat().st_size > 1000
