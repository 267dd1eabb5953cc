"""ui_fleet: the browser's cost of the fleet page with 1,000 simulated hosts at 1 frame/s.

nats-server + PostgreSQL + gateway (serving ui/dist) + `fleetwatch simulate --hosts 1000
--interval 1` in its own process; Debian's Chromium (headless, Playwright) opens the fleet page
logged in. Scripting time comes from the Chrome DevTools Protocol's Performance.getMetrics
(ScriptDuration, cumulative) over a measured window; first render is the page's own
`fleet-rendered` performance mark (navigation start -> first rows on screen with data).
The baseline is the same browser reading the same SSE stream with the least script that can
(fetch, decode, split events, count): the part of the cost any live page pays.

RESULT lines:
  ui_fleet_scripting_ms_per_s   fleet page main-thread time per second, scripting included (goal < 100)
  ui_fleet_first_render_ms      first render of the fleet page (goal < 1000)
  ui_fleet_baseline_ms_per_s    bare SSE reader's scripting per second, same stream
  ui_fleet_ratio                fleet page / bare reader
  ui_fleet_events_per_s         frame events per second on the stream (bare reader's count)
  ui_fleet_cdp_script_ms_per_s  CDP's ScriptDuration alone (misses promise jobs; for reference)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx

HOSTS = int(os.environ.get("UI_FLEET_HOSTS", "1000"))
WINDOW_S = float(os.environ.get("UI_FLEET_WINDOW_S", "10"))

BARE_READER = """async (token) => {
  window.__events = 0;
  const r = await fetch('/api/v1/stream?kinds=frame', { headers: { Authorization: 'Bearer ' + token } });
  const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = '';
  (async () => { for (;;) { const { value, done } = await reader.read(); if (done) return;
    buf += dec.decode(value, { stream: true }); let i;
    while ((i = buf.indexOf('\\n\\n')) >= 0) { buf = buf.slice(i + 2); window.__events++; } } })();
}"""


def result(name: str, value: float, unit: str) -> None:
    print(f"RESULT {name} {value:.4g} {unit}", flush=True)


async def durations(cdp) -> dict[str, float]:
    m = await cdp.send("Performance.getMetrics")
    return {x["name"]: x["value"] for x in m["metrics"] if x["name"].endswith("Duration")}


async def measure(page, cdp, count_js: str) -> tuple[float, float, float]:
    """(main-thread task ms/s, ScriptDuration ms/s, events/s) over WINDOW_S. CDP's ScriptDuration
    leaves out the promise jobs that read a fetch stream, so the headline is TaskDuration: all
    main-thread work (script, style, layout, canvas), an upper bound of the scripting time."""
    d0, e0, t0 = await durations(cdp), await page.evaluate(count_js), time.monotonic()
    await asyncio.sleep(WINDOW_S)
    d1, e1, t1 = await durations(cdp), await page.evaluate(count_js), time.monotonic()
    dt = t1 - t0
    return (
        (d1["TaskDuration"] - d0["TaskDuration"]) * 1000 / dt,
        (d1["ScriptDuration"] - d0["ScriptDuration"]) * 1000 / dt,
        (e1 - e0) / dt,
    )


async def bench() -> None:
    from bench.api_hosts import Stack
    from tests.conftest import service_env
    from tests.support.browser import browser, build_ui

    build_ui()
    st = Stack("ui_fleet")
    sim = None
    try:
        gw = await st.start_gateway()
        nc = await st.admin_nc()
        await nc.close()
        env = service_env(**st.nats.env("simulator"))
        sim = subprocess.Popen(
            [sys.executable, "-m", "fleetwatch", "simulate", "--hosts", str(HOSTS), "--interval", "1", "--top", "5"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(st.dir / "sim.log", "wb"),
        )
        # Wait until the gateway knows every host.
        deadline = time.monotonic() + 120
        while True:
            n = len(httpx.get(f"{gw.url}/api/v1/hosts", headers=gw.headers("admin"), timeout=30).json())
            if n >= HOSTS or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        if n < HOSTS:
            raise SystemExit(
                f"only {n} of {HOSTS} hosts reached the gateway: {(st.dir / 'sim.log').read_text()[-2000:]}"
            )
        login = httpx.post(
            f"{gw.url}/api/v1/auth/login", json={"username": "admin", "password": gw.admin_password}, timeout=30
        ).json()
        session = {
            "token": login["token"],
            "username": login["username"],
            "role": login["role"],
            "expires_at": login["expires_at"],
        }
        import json

        async with browser() as ctx:
            # Baseline: a bare SSE reader on a page with nothing else.
            page = await ctx.new_page()
            cdp = await ctx.new_cdp_session(page)
            await cdp.send("Performance.enable")
            await page.goto(f"{gw.url}/healthz")
            await page.evaluate(BARE_READER, session["token"])
            await asyncio.sleep(2)
            base_ms, _, base_ev = await measure(page, cdp, "window.__events")
            await page.close()

            # The fleet page, already logged in (the session the login form would store).
            page = await ctx.new_page()
            await page.add_init_script(
                f"sessionStorage.setItem('fleetwatch.session', {json.dumps(json.dumps(session))})"
            )
            cdp = await ctx.new_cdp_session(page)
            await cdp.send("Performance.enable")
            await page.goto(f"{gw.url}/#/fleet")
            await page.wait_for_function("performance.getEntriesByName('fleet-rendered').length > 0", timeout=30000)
            first_render = await page.evaluate("performance.getEntriesByName('fleet-rendered')[0].startTime")
            await page.wait_for_function(
                f"document.querySelector('[data-testid=fleet-count]').textContent.startsWith('{HOSTS} /')",
                timeout=30000,
            )
            await asyncio.sleep(3)
            ui_ms, ui_script, _ = await measure(page, cdp, "0")
            # Check it is live: a row's last-seen stays fresh and values move.
            live = await page.evaluate("document.querySelector('[data-testid=stream-state]').textContent")
            await page.close()

        result("ui_fleet_scripting_ms_per_s", ui_ms, "ms/s")
        result("ui_fleet_first_render_ms", first_render, "ms")
        result("ui_fleet_baseline_ms_per_s", base_ms, "ms/s")
        result("ui_fleet_ratio", ui_ms / base_ms if base_ms > 0 else float("nan"), "x")
        result("ui_fleet_events_per_s", base_ev, "events/s")
        result("ui_fleet_cdp_script_ms_per_s", ui_script, "ms/s")
        print(f"# {HOSTS} hosts, window {WINDOW_S:g} s, stream state on the page: {live!r}", flush=True)
    finally:
        if sim is not None:
            sim.terminate()
            try:
                sim.wait(20)
            except subprocess.TimeoutExpired:
                sim.kill()
        st.stop()


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
