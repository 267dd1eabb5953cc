"""The web UI in a real browser (Debian's Chromium via Playwright) against the real stack:
nats-server, PostgreSQL, ingest, commander, alerter, gateway and the simulator. One stack and one
browser for the module; each test opens its own tab (its own session) and saves a screenshot."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import TimeoutError as PlaywrightTimeout

from tests.conftest import service_env
from tests.support.browser import COMMANDER_HOST, browser, login, shot, ui_stack
from tests.support.commander import APP_PYTHON, AS_NOBODY, CommanderProcess

pytestmark = pytest.mark.timeout(300)
HOSTS = 24


@pytest.fixture(scope="module")
async def stack(nats_stack, pg_cluster, workdir):
    async with ui_stack(nats_stack, pg_cluster, workdir, sim_hosts=HOSTS, interval=1.0, history_rounds=60) as st:
        # The app the tests restart and follow, registered the way an admin would.
        spec = {
            "name": "web",
            "run": {"runtime": "python", "script": str(st.dir / "app.py"), "interpreter": APP_PYTHON},
            "restart": "on-failure",
        }
        r = httpx.post(
            f"{st.gw.url}/api/v1/hosts/{COMMANDER_HOST}/apps",
            json={"spec": spec, "start": True},
            headers=st.gw.headers("admin"),
            timeout=30,
        )
        assert r.status_code == 201, r.text
        yield st


@pytest.fixture(scope="module")
async def ctx():
    async with browser() as c:
        yield c


async def appears_after_reloads(page, locator, timeout: float) -> bool:
    """Reload until `locator` shows (data that a service stores a moment later), giving each
    load a few seconds to answer: counting right after a reload would race the page's fetch."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await locator.first.wait_for(timeout=3000)
            return True
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                return False
        await page.reload()


async def page_as(ctx, stack, role: str, path: str = "/fleet"):
    page = await ctx.new_page()
    name, pw = stack.user(role)
    await login(page, stack.gw.url, name, pw, path)
    return page


async def test_login_shows_role_and_fleet_updates_live(ctx, stack):
    page = await ctx.new_page()
    await page.goto(stack.gw.url + "/")
    # A wrong password: the server's reason, no session.
    await page.get_by_label("Username").fill("admin")
    await page.get_by_label("Password").fill("not-the-password")
    await page.get_by_role("button", name="Log in").click()
    await (
        page.get_by_role("alert")
        .filter(has_text=re.compile("invalid|password|credentials", re.I))
        .wait_for(timeout=10000)
    )
    await page.get_by_label("Password").fill(stack.passwords["admin"])
    await page.get_by_role("button", name="Log in").click()
    assert (await page.get_by_test_id("role").text_content()) == "admin"
    assert "admin" in await page.get_by_test_id("whoami").inner_text()
    assert await page.evaluate("sessionStorage.getItem('fleetwatch.session') !== null")

    table = page.get_by_test_id("fleet-table")
    await page.get_by_test_id("fleet-count").filter(has_text=f"{HOSTS} / {HOSTS}").wait_for(timeout=20000)
    await page.get_by_test_id("stream-state").filter(has_text="live").wait_for(timeout=10000)
    live_since = time.monotonic()
    for h in stack.hosts[:8]:
        await table.locator(f'tr[data-host="{h}"]').wait_for(timeout=5000)

    # Sort by CPU (descending), then filter down to one host and watch its CPU cell change live.
    await table.get_by_role("button", name="CPU").click()
    assert await table.locator("th[aria-sort=descending]").inner_text() == "CPU ▾"
    await page.get_by_test_id("fleet-filter").fill(COMMANDER_HOST)
    await page.get_by_test_id("fleet-count").filter(has_text=f"1 / {HOSTS}").wait_for(timeout=5000)
    cpu = table.locator(f'tr[data-host="{COMMANDER_HOST}"] td').nth(2)
    first = await cpu.inner_text()
    deadline = time.monotonic() + 20
    while (now := await cpu.inner_text()) == first and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    assert now != first and now.endswith("%"), (first, now)
    await page.get_by_test_id("fleet-filter").fill("")
    await page.get_by_test_id("fleet-count").filter(has_text=f"{HOSTS} / {HOSTS}").wait_for(timeout=5000)
    # The screenshot shows sparklines several frames long (the page has been live since the login).
    await asyncio.sleep(max(0.0, live_since + 6 - time.monotonic()))
    await shot(page, "fleet")

    # Logout forgets the token.
    await page.get_by_role("button", name="Log out").click()
    await page.get_by_label("Username").wait_for()
    assert await page.evaluate("sessionStorage.getItem('fleetwatch.session') === null")
    await page.close()


async def test_host_chart_draws_history(ctx, stack):
    page = await page_as(ctx, stack, "operator", f"/host/{COMMANDER_HOST}")
    charts = page.locator(".charts")
    # 60 historical frames 5 s apart (5 minutes) were published before the browser opened.
    await page.locator('[data-chart="cpu"] canvas').first.wait_for(timeout=20000)
    await page.wait_for_function(
        "() => Number(document.querySelector('.charts').dataset.points || 0) >= 30", timeout=20000
    )
    assert await charts.get_attribute("data-tier") == "metrics"
    # The canvas really has a line on it: count painted pixels.
    painted = await page.evaluate("""() => {
      const c = document.querySelector('[data-chart="cpu"] canvas');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
      return n; }""")
    assert painted > 500, painted
    for name in ("mem", "disk", "net", "gpu"):
        assert await page.locator(f'[data-chart="{name}"]').count() == 1
    # Live values and the process table come from the stream.
    await page.wait_for_function(
        "() => document.querySelector('[data-testid=live-cpu]')?.textContent.endsWith('%')", timeout=15000
    )
    await page.get_by_test_id("proc-table").locator("tbody tr").first.wait_for(timeout=15000)
    # Another range asks the history API again.
    async with page.expect_response(re.compile(r"/metrics\?")) as resp:
        await page.get_by_role("radio", name="1h").click()
    assert (await resp.value).status == 200
    assert await page.get_by_role("radio", name="1h").get_attribute("aria-checked") == "true"
    await shot(page, "host")
    await page.close()


async def test_restart_app_shows_new_pid_and_audit_names_user(ctx, stack):
    page = await page_as(ctx, stack, "operator", f"/host/{COMMANDER_HOST}")
    row = page.get_by_test_id("apps-table").locator('tr[data-app="web"]')
    pid_cell = row.get_by_test_id("app-pid")
    await page.wait_for_function(
        "() => /^\\d+$/.test(document.querySelector('tr[data-app=web] [data-testid=app-pid]')?.textContent || '')",
        timeout=20000,
    )
    old = await pid_cell.inner_text()
    await row.get_by_role("button", name="Restart web").click()
    dialog = page.get_by_role("dialog")
    assert "Restart web" in await dialog.inner_text()
    await dialog.get_by_role("button", name="Confirm").click()
    await page.wait_for_function(
        f"() => {{ const t = document.querySelector('tr[data-app=web] [data-testid=app-pid]')?.textContent; return /^\\d+$/.test(t) && t !== '{old}'; }}",
        timeout=20000,
    )
    new = await pid_cell.inner_text()
    assert new != old
    await shot(page, "host-apps")

    user = stack.user("operator")[0]
    await page.goto(stack.gw.url + "/#/audit")
    await page.get_by_label("What").fill("apps.restart")
    table = page.get_by_test_id("audit-table")
    audit_row = table.locator(f'tr[data-action="apps.restart"][data-actor="{user}"]')
    # The record reaches the table through JetStream and ingest: ask again until it is there,
    # counting rows only once each answer has landed (the table is aria-busy while loading).
    deadline = time.monotonic() + 20
    while True:
        await page.get_by_role("button", name="Apply").click()
        await page.locator("[data-testid=audit-table][aria-busy=false]").wait_for(timeout=15000)
        if await audit_row.count() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert await audit_row.count() >= 1
    text = await audit_row.first.inner_text()
    assert user in text and "web" in text and COMMANDER_HOST in text and "ok" in text
    await shot(page, "audit")
    await page.close()


async def test_follow_logs_new_line_appears_pause_and_filter(ctx, stack):
    page = await page_as(ctx, stack, "operator", f"/logs/{COMMANDER_HOST}/web")
    view = page.get_by_test_id("log-view")
    await page.get_by_test_id("logs-state").filter(has_text="live").wait_for(timeout=15000)
    await view.locator(".ll").first.wait_for(timeout=15000)

    def last_n(text: str) -> int:
        return max(int(m) for m in re.findall(r"ui line (\d+)", text))

    seen = last_n(await view.inner_text())
    await page.wait_for_function(
        f"() => Math.max(...[...document.querySelectorAll('[data-testid=log-view] .ll')].map(e => +(e.textContent.match(/ui line (\\d+)/)||[0,0])[1])) > {seen}",
        timeout=15000,
    )
    # Paused: new lines are held back, then shown on resume.
    await page.get_by_test_id("logs-pause").click()
    held = await view.locator(".ll").count()
    await page.get_by_test_id("logs-count").filter(has_text="(+").wait_for(timeout=10000)
    assert await view.locator(".ll").count() == held
    await page.get_by_test_id("logs-pause").click()
    await page.wait_for_function(
        f"() => document.querySelectorAll('[data-testid=log-view] .ll').length > {held}", timeout=10000
    )
    # Level filter and search.
    await page.get_by_test_id("logs-level").select_option("warning")
    levels = await view.locator(".ll").evaluate_all("els => els.map(e => e.className)")
    assert levels and all("lvl-warning" in c for c in levels)
    await page.get_by_test_id("logs-level").select_option("")
    await page.get_by_test_id("logs-search").fill(f"ui line {seen}")
    assert all(f"ui line {seen}" in x for x in await view.locator(".ll").all_inner_texts())
    await page.get_by_test_id("logs-search").fill("")
    await shot(page, "logs")
    # The stream cut (requests refused in the browser): "disconnected — retrying", then live again.
    await page.route(re.compile(r"/logs/stream"), lambda route: route.abort())
    await page.evaluate("location.hash = '#/fleet'")
    await page.evaluate(f"location.hash = '#/logs/{COMMANDER_HOST}/web'")
    await page.get_by_test_id("logs-state").filter(has_text="disconnected — retrying").wait_for(timeout=15000)
    await page.unroute(re.compile(r"/logs/stream"))
    await page.get_by_test_id("logs-state").filter(has_text="live").wait_for(timeout=20000)
    await page.get_by_test_id("log-view").locator(".ll").first.wait_for(timeout=15000)
    await page.close()


async def test_silence_an_alert(ctx, stack):
    page = await page_as(ctx, stack, "operator", "/alerts")
    firing = page.get_by_test_id("alerts-firing").locator(f'tr[data-rule="ui-cpu"][data-host="{COMMANDER_HOST}"]')
    if not await appears_after_reloads(page, firing, 30):
        r = httpx.get(f"{stack.gw.url}/api/v1/alerts", headers=stack.gw.headers("operator"), timeout=30)
        log = (stack.dir / "alerter.log").read_text(errors="replace")[-3000:]
        pytest.fail(
            f"no firing ui-cpu alert: GET /api/v1/alerts -> {r.status_code} {r.text[:500]}\nalerter log:\n{log}"
        )
    await firing.get_by_role("button", name=re.compile("^Silence")).click()
    dlg = page.get_by_role("dialog")
    await dlg.get_by_label("Silence for").select_option(label="4h")
    await dlg.get_by_label("Comment").fill("maintenance window")
    await dlg.get_by_role("button", name="Silence").click()
    await firing.get_by_test_id("silenced").wait_for(timeout=15000)
    sil = page.get_by_test_id("silences").locator("tbody tr").filter(has_text="maintenance window")
    await sil.wait_for(timeout=5000)
    assert "rule=ui-cpu" in await sil.inner_text() and f"host={COMMANDER_HOST}" in await sil.inner_text()
    await shot(page, "alerts")
    # The rules editor: the server's reason for a bad rule is shown, a good one is listed.
    await page.get_by_role("button", name="Add: Rules").click()
    editor = page.get_by_test_id("editor-form-rules")
    text = editor.get_by_label("Definition (JSON)")
    rule = '{"name": "ui-load", "kind": "metric", "field": "no.such.field", "op": ">", "threshold": 4}'
    await text.fill(rule)
    await editor.get_by_role("button", name="Save").click()
    await editor.get_by_role("alert").filter(has_text="no.such.field").wait_for(timeout=15000)
    await text.fill(rule.replace("no.such.field", "cpu.load1"))
    await editor.get_by_role("button", name="Save").click()
    await page.get_by_test_id("editor-rules").locator("tr").filter(has_text="ui-load").wait_for(timeout=15000)
    assert await editor.is_hidden()
    await page.close()


async def test_alert_link_opens_that_alert_with_value_read_by_field(ctx, stack):
    """A notification links to #/alerts/<fingerprint>: that page marks the alert, and shows the
    value as its field reads (cpu.percent: a percent), the way the notice text does."""
    fp = ""
    deadline = time.monotonic() + 30
    while not fp and time.monotonic() < deadline:
        r = httpx.get(f"{stack.gw.url}/api/v1/alerts", headers=stack.gw.headers("viewer"), timeout=30)
        body = r.json()
        rows = body if isinstance(body, list) else body.get("alerts", body.get("items", []))
        fp = next((a["fingerprint"] for a in rows if a["rule"] == "ui-cpu" and a["state"] == "firing"), "")
        if not fp:
            await asyncio.sleep(1)
    assert fp, f"no firing ui-cpu alert: {r.status_code} {r.text[:300]}"
    page = await page_as(ctx, stack, "viewer", f"/alerts/{fp}")
    row = page.locator(f'tr[data-alert="{fp}"]')
    await row.wait_for(timeout=15000)
    assert await row.get_attribute("aria-current") == "true"
    assert re.search(r"\d%", await row.locator("td.num").inner_text())
    await page.goto(stack.gw.url + "/#/alerts/no-such-alert")
    await page.get_by_role("status").filter(has_text="no-such-alert").wait_for(timeout=15000)
    await page.close()


async def test_viewer_sees_no_action_buttons_and_api_refuses(ctx, stack):
    page = await page_as(ctx, stack, "viewer", f"/host/{COMMANDER_HOST}")
    assert await page.get_by_test_id("role").text_content() == "viewer"
    apps = page.get_by_test_id("apps-table")
    await apps.locator('tr[data-app="web"]').wait_for(timeout=15000)
    assert await apps.get_by_role("button").count() == 0
    assert await apps.get_by_role("link", name=re.compile("Logs")).count() == 0
    assert await page.get_by_test_id("register-form").count() == 0
    assert await page.get_by_role("button", name=re.compile("Scan")).count() == 0
    assert (
        await page.get_by_role("link", name="Audit").count() == 0
        and await page.get_by_role("link", name="Users").count() == 0
    )
    await page.goto(stack.gw.url + "/#/alerts")
    # the rows an operator would have Silence buttons on are drawn
    await page.get_by_test_id("alerts-firing").locator("tr[data-rule]").first.wait_for(timeout=30000)
    assert await page.get_by_role("button", name=re.compile("^Silence")).count() == 0
    assert await page.get_by_test_id("alerts-firing").locator("th", has_text=re.compile("^Actions$")).count() == 0
    assert await page.get_by_role("button", name=re.compile("^(Add|Edit|Delete)")).count() == 0
    await shot(page, "viewer")
    # Hidden is not the only guard: the API refuses the viewer's token.
    token = await page.evaluate("JSON.parse(sessionStorage.getItem('fleetwatch.session')).token")
    r = httpx.post(
        f"{stack.gw.url}/api/v1/hosts/{COMMANDER_HOST}/apps/web/restart",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 403
    await page.close()


async def test_register_form_validates_in_browser_and_shows_server_reason(ctx, stack):
    page = await page_as(ctx, stack, "admin", f"/host/{COMMANDER_HOST}")
    form = page.get_by_test_id("register-form")
    await form.get_by_label("Name").fill("bad name!")
    await form.get_by_label("Script (absolute path)").fill(str(stack.dir / "app.py"))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if r.method == "POST" else None)
    await form.get_by_role("button", name="Register").click()
    assert await form.get_by_label("Name").evaluate("e => !e.validity.valid")
    await form.get_by_label("Environment (KEY=value per line)").fill("1BAD=x")
    assert await form.get_by_label("Environment (KEY=value per line)").evaluate(
        "e => e.validationMessage.includes('KEY=value')"
    )
    await form.get_by_label("Environment (KEY=value per line)").fill("PORT=8000")
    await asyncio.sleep(0.3)
    assert not [u for u in requests if u.endswith("/apps")]
    # Valid in the browser, refused by the server: its reason is shown.
    await form.get_by_label("Name").fill("ghost")
    await form.get_by_label("Script (absolute path)").fill("/nonexistent/ghost.py")
    await form.get_by_role("button", name="Register").click()
    err = page.get_by_test_id("register-error")
    await err.filter(has_text=re.compile(r"\S")).wait_for(timeout=15000)
    assert "ghost.py" in await err.inner_text() or "exist" in (await err.inner_text()).lower()
    await form.scroll_into_view_if_needed()
    await shot(page, "register-error")
    await page.close()


async def test_users_page_create_deactivate_and_replication(ctx, stack):
    page = await page_as(ctx, stack, "admin", "/users")
    form = page.get_by_test_id("user-form")
    await form.get_by_label("Username").fill("carol")
    await form.get_by_label("Password").fill("s3cret-pass-word")
    await form.get_by_label("Role").select_option("operator")
    await form.get_by_role("button", name="Create a user").click()
    row = page.get_by_test_id("users-table").locator('tr[data-user="carol"]')
    await row.wait_for(timeout=10000)
    assert "operator" in (await row.inner_text()).lower()
    await row.get_by_role("button", name="Deactivate carol").click()
    await page.get_by_role("dialog").get_by_role("button", name="Deactivate").click()
    await page.get_by_test_id("users-table").locator('tr.inactive[data-user="carol"]').wait_for(timeout=10000)
    # The deactivated account can no longer log in.
    r = httpx.post(
        f"{stack.gw.url}/api/v1/auth/login", json={"username": "carol", "password": "s3cret-pass-word"}, timeout=30
    )
    assert r.status_code in (401, 403)
    # The host's replicator reported its start-up sync; "Sync now" asks for another one.
    rep = page.get_by_test_id("replication-table").locator(f'tr[data-host="{COMMANDER_HOST}"]')
    assert await appears_after_reloads(page, rep, 30)
    assert "ok" in await rep.inner_text()
    async with page.expect_response(re.compile(r"/replication/sync$")) as resp:
        await rep.get_by_role("button", name="Sync now").click()
    assert (await resp.value).status in (200, 202)
    await shot(page, "users")
    await page.close()


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)])
async def test_no_layout_break_and_keyboard(ctx, stack, width, height):
    page = await page_as(ctx, stack, "operator", "/fleet")
    await page.set_viewport_size({"width": width, "height": height})
    await page.get_by_test_id("fleet-count").filter(has_text=f"{HOSTS} / {HOSTS}").wait_for(timeout=15000)
    # Each page measured once its data is drawn (the widest content: tables, charts).
    drawn = {
        "/fleet": f'[data-testid=fleet-table] tr[data-host="{COMMANDER_HOST}"]',
        f"/host/{COMMANDER_HOST}": '[data-testid=apps-table] tr[data-app="web"], [data-chart="cpu"] canvas, [data-testid=proc-table] tbody tr',
        "/alerts": "[data-testid=alerts-firing] tr[data-rule]",
        "/audit": "[data-testid=audit-table] tr[data-action]",
    }
    for path, selector in drawn.items():
        await page.goto(f"{stack.gw.url}/#{path}")
        await page.locator("main h1").first.wait_for()
        for sel in selector.split(", "):
            await page.locator(sel).first.wait_for(timeout=20000)
        overflow = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, (path, width, overflow)
    if width < 500:
        await page.goto(f"{stack.gw.url}/#/fleet")
        await page.get_by_test_id("fleet-count").filter(has_text=f"{HOSTS} / {HOSTS}").wait_for(timeout=15000)
        await shot(page, "fleet-phone")
    else:
        # Keyboard: Tab reaches the filter, and Enter on a host link opens the host page.
        await page.goto(f"{stack.gw.url}/#/fleet")
        await page.get_by_test_id("fleet-filter").focus()
        await page.keyboard.type(COMMANDER_HOST)
        await page.keyboard.press("Tab")
        for _ in range(12):
            if await page.evaluate("document.activeElement?.getAttribute('href') || ''") == f"#/host/{COMMANDER_HOST}":
                break
            await page.keyboard.press("Tab")
        await page.keyboard.press("Enter")
        await page.get_by_test_id("host-title").filter(has_text=COMMANDER_HOST).wait_for(timeout=5000)
        # The light theme and Spanish texts.
        await page.get_by_role("button", name=re.compile("Theme")).click()
        await page.get_by_role("button", name="Language").click()
        assert await page.evaluate("document.documentElement.dataset.theme") == "light"
        await page.get_by_role("heading", name="Procesos", exact=True).wait_for(timeout=5000)
        await shot(page, "host-light-es")
        await page.get_by_role("button", name=re.compile("Tema")).click()
        await page.get_by_role("button", name="Idioma").click()
    await page.close()


async def test_scan_adopt_prefills_register_form_and_run_a_job(ctx, stack):
    page = await page_as(ctx, stack, "admin", f"/host/{COMMANDER_HOST}")
    # Scan: the Python services of this very stack run unmanaged on this machine.
    await page.get_by_role("button", name="Scan for unmanaged processes").click()
    result = page.get_by_test_id("scan-result")
    await result.locator("tbody tr").first.wait_for(timeout=30000)
    py_rows = result.locator('tbody tr:has(td:nth-child(2):text-is("python"))')
    assert await py_rows.count() >= 1
    await py_rows.first.get_by_role("button", name=re.compile("^Adopt")).click()
    form = page.get_by_test_id("register-form")
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", await form.get_by_label("Name").input_value())
    assert await form.get_by_label("Runtime").input_value() == "python"
    assert (await form.get_by_label("Interpreter").input_value()) != ""
    # A one-shot job: run it, see it in the list, read its output.
    jobs = page.get_by_test_id("jobs-table")
    await (
        page.get_by_role("form", name="Run a job")
        .get_by_label("Command (one argument per line)")
        .fill("echo\nhello from the ui")
    )
    await page.get_by_role("form", name="Run a job").get_by_role("button", name="Run").click()
    row = jobs.locator("tbody tr").filter(has_text="echo hello from the ui").first
    await row.wait_for(timeout=15000)
    deadline = time.monotonic() + 20
    while "succeeded" not in await row.inner_text() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        await page.evaluate("location.hash = '#/fleet'")
        await page.evaluate(f"location.hash = '#/host/{COMMANDER_HOST}'")
        row = page.get_by_test_id("jobs-table").locator("tbody tr").filter(has_text="echo hello from the ui").first
        await row.wait_for(timeout=15000)
    await row.get_by_role("button", name="Logs").click()
    await page.get_by_test_id("job-log").filter(has_text="hello from the ui").wait_for(timeout=15000)
    await page.get_by_test_id("jobs-table").scroll_into_view_if_needed()
    await shot(page, "jobs")
    await page.close()


async def test_role_banner_for_viewer_and_operator_not_admin_and_a_lowered_role_is_explained(ctx, stack):
    page = await page_as(ctx, stack, "viewer", f"/host/{COMMANDER_HOST}")
    banner = page.get_by_test_id("role-banner")
    await banner.wait_for(timeout=10000)
    text = await banner.inner_text()
    assert "viewer" in text and "operator role" in text and "admin" in text
    await page.close()
    page = await page_as(ctx, stack, "admin", f"/host/{COMMANDER_HOST}")
    await page.get_by_test_id("apps-table").locator('tr[data-app="web"]').wait_for(timeout=15000)
    assert await page.get_by_test_id("role-banner").is_hidden()
    await page.close()

    # An operator whose role is lowered while the page is open: the refusal says why, in the banner.
    name, pw = "ui-demoted", secrets.token_urlsafe(12)
    users = f"{stack.gw.url}/api/v1/users"
    httpx.post(
        users,
        json={"username": name, "password": pw, "role": "operator"},
        headers=stack.gw.headers("admin"),
        timeout=30,
    ).raise_for_status()
    page = await ctx.new_page()
    await login(page, stack.gw.url, name, pw, f"/host/{COMMANDER_HOST}")
    banner = page.get_by_test_id("role-banner")
    assert "admin role" in await banner.inner_text()
    row = page.get_by_test_id("apps-table").locator('tr[data-app="web"]')
    await row.wait_for(timeout=15000)
    httpx.patch(
        f"{users}/{name}", json={"role": "viewer"}, headers=stack.gw.headers("admin"), timeout=30
    ).raise_for_status()
    await row.get_by_role("button", name="Restart web").click()
    await page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    await banner.filter(has_text="role operator or higher required (you have viewer)").wait_for(timeout=10000)
    assert "does not allow" in await banner.inner_text()
    await banner.scroll_into_view_if_needed()
    await shot(page, "role-banner")
    await page.close()


async def test_commander_without_privileges_shows_the_banner_with_the_sudoers_line(ctx, stack, nats_stack, nc):
    # A second commander, for host `local`, running as nobody: it may not write systemd units.
    home = Path(tempfile.mkdtemp(prefix="fleetwatch-nobody-"))
    (home / "app.py").write_text("import time\nwhile True:\n    time.sleep(1)\n")
    for p in (home, home / "app.py"):
        os.chown(p, 65534, 65534)
    cp = CommanderProcess(
        service_env(**nats_stack.env(host="local")),
        home / "state",
        stack.dir / "commander-nobody.log",
        argv_prefix=AS_NOBODY,
        unit_dir=str(stack.dir / "units"),
    ).start()
    try:
        await cp.wait_ready(nc, "local")
        page = await page_as(ctx, stack, "admin", "/host/local")
        banner = page.get_by_test_id("privilege-banner")
        await page.get_by_test_id("apps-table").wait_for()
        assert await banner.is_hidden()  # nothing refused yet
        form = page.get_by_test_id("register-form")
        await form.get_by_label("Name").fill("needs-root")
        await form.get_by_label("Backend").select_option("systemd")
        await form.get_by_label("Script (absolute path)").fill(str(home / "app.py"))
        await form.get_by_label("Interpreter").fill("/usr/bin/python3")
        await form.get_by_label("Start after registering").uncheck()
        await form.get_by_role("button", name="Register").click()
        await banner.filter(has_text="sudoers").wait_for(timeout=20000)
        text = await banner.inner_text()
        assert "lacks privileges" in text and "'nobody'" in text and "NOPASSWD" in text and "systemctl" in text
        assert "sudoers" in await page.get_by_test_id("register-error").inner_text()
        assert await page.get_by_test_id("apps-table").locator('tr[data-app="needs-root"]').count() == 0
        await banner.scroll_into_view_if_needed()
        await shot(page, "privilege-banner")
        await page.close()
    finally:
        cp.stop()
        shutil.rmtree(home, ignore_errors=True)


def login_status(stack, username: str, password: str) -> int:
    r = httpx.post(f"{stack.gw.url}/api/v1/auth/login", json={"username": username, "password": password}, timeout=30)
    return r.status_code


async def test_admin_resets_a_password_then_the_user_changes_it(ctx, stack):
    name, first = "ui-pw", "first-pass-123"
    httpx.post(
        f"{stack.gw.url}/api/v1/users",
        json={"username": name, "password": first, "role": "viewer"},
        headers=stack.gw.headers("admin"),
        timeout=30,
    ).raise_for_status()
    page = await page_as(ctx, stack, "admin", "/users")
    row = page.get_by_test_id("users-table").locator(f'tr[data-user="{name}"]')
    await row.get_by_role("button", name=f"Reset password {name}").click()
    dlg = page.get_by_test_id("password-dialog")
    await dlg.get_by_label("New password", exact=True).fill("reset-pass-456")
    await dlg.get_by_label("New password again").fill("reset-pass-457")
    await dlg.get_by_role("button", name="Save").click()
    # Checked in the browser: two different new passwords are not sent.
    assert await dlg.get_by_label("New password again").evaluate("e => !e.validity.valid")
    assert login_status(stack, name, first) == 201
    await dlg.get_by_label("New password again").fill("reset-pass-456")
    await dlg.get_by_role("button", name="Save").click()
    await dlg.wait_for(state="detached", timeout=10000)
    await page.get_by_role("status").filter(has_text="Password reset").wait_for(timeout=5000)
    assert login_status(stack, name, first) == 401
    assert login_status(stack, name, "reset-pass-456") == 201
    await page.close()

    # The user changes theirs: a wrong current password is the server's reason, shown in the dialog.
    page = await ctx.new_page()
    await login(page, stack.gw.url, name, "reset-pass-456")
    await page.get_by_role("button", name="Change your password").click()
    dlg = page.get_by_test_id("password-dialog")
    await dlg.get_by_label("Current password").fill("not-the-current-1")
    await dlg.get_by_label("New password", exact=True).fill("own-pass-789")
    await dlg.get_by_label("New password again").fill("own-pass-789")
    await dlg.get_by_role("button", name="Save").click()
    await dlg.get_by_test_id("password-error").filter(has_text="current password is not right").wait_for(timeout=10000)
    await shot(page, "password-change")
    assert login_status(stack, name, "reset-pass-456") == 201
    await dlg.get_by_label("Current password").fill("reset-pass-456")
    await dlg.get_by_role("button", name="Save").click()
    await dlg.wait_for(state="detached", timeout=10000)
    await page.get_by_role("status").filter(has_text="Password changed").wait_for(timeout=5000)
    assert login_status(stack, name, "reset-pass-456") == 401
    assert login_status(stack, name, "own-pass-789") == 201
    assert await page.get_by_test_id("role").text_content() == "viewer"  # still signed in
    # The change ended every earlier session; the page now holds the successor the gateway gave it.
    token = await page.evaluate("JSON.parse(sessionStorage.getItem('fleetwatch.session')).token")
    me = httpx.get(f"{stack.gw.url}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert me.status_code == 200 and me.json()["username"] == name
    await page.close()


async def test_job_form_second_use_keeps_timeout_and_caps_it_at_the_servers_max(ctx, stack):
    """After a run the form resets: the timeout must come back as its default, not empty (the
    next job was refused with `timeout_s must be in (0, 3600]`), and the form offers no more than
    the commander accepts."""
    page = await page_as(ctx, stack, "operator", f"/host/{COMMANDER_HOST}")
    form = page.get_by_role("form", name="Run a job")
    timeout = form.get_by_label("Timeout")
    await timeout.wait_for(timeout=15000)
    assert await timeout.get_attribute("max") == "3600"
    jobs = page.get_by_test_id("jobs-table")
    for n in (1, 2):
        await form.get_by_label("Command (one argument per line)").fill(f"echo\nsecond use {n}")
        await form.get_by_role("button", name="Run").click()
        await jobs.locator("tbody tr").filter(has_text=f"echo second use {n}").first.wait_for(timeout=15000)
        assert await timeout.input_value() == "300"
    await page.close()
