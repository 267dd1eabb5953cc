"""The host page's charts against history of known shape, written straight into PostgreSQL: the x
axis spans the chosen range up to now whatever points exist, the peak shows beside the average,
a host without GPUs gets no GPU chart, and a stale host's cards are filled, greyed and dated."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import asyncpg
import pytest

from tests.support.browser import browser, login, shot, ui_stack

pytestmark = pytest.mark.timeout(300)
HOST = "hist-fixture"
RANGES = {"15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
AVG, PEAK = 30.0, 75.0


@pytest.fixture(scope="module")
async def stack(nats_stack, pg_cluster, workdir):
    async with ui_stack(
        nats_stack, pg_cluster, workdir, sim_hosts=2, history_rounds=0, commander=False, alerter=False
    ) as st:
        now = time.time()
        conn = await asyncpg.connect(st.dsn)
        try:
            # One raw frame 60 s ago (a host seen for a moment), one 1-minute and one 1-hour rollup
            # whose average hides a 75 % spike.
            await conn.execute(
                """INSERT INTO metrics (time, host, boot, seq, cpu_percent, cpu_count, mem_total,
                   mem_available, mem_used, mem_percent) VALUES ($1, $2, 1, 1, $3, 4, 100, 50, 50, 50)""",
                datetime.fromtimestamp(now - 60, UTC),
                HOST,
                PEAK,
            )
            for table, age in (("metrics_1m", 3 * 3600), ("metrics_1h", 3 * 86400)):
                await conn.execute(
                    f"""INSERT INTO {table} (time, host, samples, cpu_percent, cpu_percent_max,
                        mem_percent, mem_percent_max) VALUES ($1, $2, 60, $3, $4, 40, 41)""",
                    datetime.fromtimestamp(now - age, UTC),
                    HOST,
                    AVG,
                    PEAK,
                )
        finally:
            await conn.close()
        yield st


async def x_span(page) -> tuple[float, float]:
    fig = page.locator('[data-chart="cpu"]')
    return float(await fig.get_attribute("data-xmin")), float(await fig.get_attribute("data-xmax"))


async def wait_range(page, label: str) -> None:
    """Click a range and wait for its answer to be drawn (the x span matches it)."""
    want = RANGES[label]
    async with page.expect_response(lambda r: "/metrics?" in r.url) as resp:
        await page.get_by_role("radio", name=label).click()
    assert (await resp.value).status == 200
    deadline = time.monotonic() + 10
    while True:
        try:
            lo, hi = await x_span(page)
            if abs((hi - lo) - want) < 5:
                return
        except (TypeError, ValueError):
            pass
        assert time.monotonic() < deadline, f"{label}: x span never became {want}s"
        await asyncio.sleep(0.2)


async def check_range(page, label: str) -> None:
    await wait_range(page, label)
    lo, hi = await x_span(page)
    now = time.time()
    # now - range .. now, not the data's own extent (one point, or a rollup bucket in the future).
    assert abs(hi - now) < 30, (label, hi, now)
    assert abs(lo - (now - RANGES[label])) < 30, (label, lo, now)
    # The peak is shown beside the average: 75 %, not the 30 % average.
    cap = page.get_by_test_id("chart-max-cpu")
    assert (await cap.text_content()) == f"max {PEAK:.1f}%", label
    # This host reported no GPU: no GPU chart.
    assert await page.locator('[data-chart="gpu"]').is_hidden()


async def test_axis_spans_every_range_and_peak_shows_then_again_after_switching_and_reload(stack):
    async with browser() as ctx:
        page = await ctx.new_page()
        await login(page, stack.gw.url, "admin", stack.passwords["admin"], f"/host/{HOST}")
        await page.locator('[data-chart="cpu"] canvas').first.wait_for(timeout=20000)
        for label in ("1h", "24h", "7d", "30d", "15m"):
            await check_range(page, label)
        # Second use: back and forth, then a reload.
        for label in ("30d", "1h", "7d", "15m", "24h"):
            await check_range(page, label)
        await page.reload()
        await page.locator('[data-chart="cpu"] canvas').first.wait_for(timeout=20000)
        for label in ("7d", "15m"):
            await check_range(page, label)
        await page.close()


async def test_stat_cards_filled_at_load_and_stale_host_shown_offline(stack):
    host = stack.hosts[1]  # a simulated host: in the directory with a last frame
    async with browser() as ctx:
        page = await ctx.new_page()
        await login(page, stack.gw.url, "admin", stack.passwords["admin"], f"/host/{host}")
        # Filled from the directory right away, before or without a new frame.
        cpu = page.get_by_test_id("live-cpu")
        await cpu.wait_for(timeout=5000)
        assert (await cpu.text_content()).endswith("%")
        assert await page.get_by_test_id("host-live").get_attribute("data-state") == "online"
        await shot(page, "host")
        await page.close()
        # The simulator stops: the host goes quiet; once stale its values are greyed and dated.
        await stack.sim.stop()
        await asyncio.sleep(32)
        page = await ctx.new_page()
        await login(page, stack.gw.url, "admin", stack.passwords["admin"], f"/host/{host}")
        note = page.get_by_test_id("host-stale")
        await note.wait_for(timeout=10000)
        assert "last seen" in (await note.text_content()).lower()
        assert await page.get_by_test_id("host-live").get_attribute("data-state") == "offline"
        assert (await page.get_by_test_id("live-cpu").text_content()).endswith("%")
        await shot(page, "host-offline")
        await page.close()


async def test_username_pattern_compiles_in_the_browser_and_refuses_a_bad_name(stack):
    async with browser() as ctx:
        page = await ctx.new_page()
        warnings: list[str] = []
        page.on("console", lambda m: warnings.append(m.text) if "pattern" in m.text.lower() else None)
        await login(page, stack.gw.url, "admin", stack.passwords["admin"], "/users")
        box = page.locator('input[name="username"]')
        await box.wait_for(timeout=10000)
        for bad, good in (("Bad Name", "ok-name_1"), ("-x", "x-y")):
            await box.fill(bad)
            assert await box.evaluate("e => e.validity.patternMismatch"), bad
            await box.fill(good)
            assert not await box.evaluate("e => e.validity.patternMismatch"), good
        assert warnings == []
        await page.close()
