"""The web UI against the real stack, in Debian's Chromium driven by Playwright.

`ui_stack(...)` starts nats (the session's), a fresh PostgreSQL database, ingest, a commander on
`COMMANDER_HOST`, the alerter (with a rules file), the gateway serving ui/dist, and the simulator
(history first, then live frames) in the test's event loop. `browser(...)` launches Chromium with
a new empty profile; `login(page, ...)` goes through the login form like a person would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

from fleetwatch.simulate import Simulator, host_ids

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "ui" / "dist"
CHROMIUM = os.environ.get("FLEETWATCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COMMANDER_HOST = "host-c"
SCREENSHOTS = Path(os.environ.get("FLEETWATCH_SCREENSHOTS", "") or tempfile.gettempdir()) / (
    "" if os.environ.get("FLEETWATCH_SCREENSHOTS") else "fleetwatch-ui-shots"
)


def build_ui() -> None:
    """ui/dist from the lock file when it is missing or older than the sources (what `make ui` does)."""
    srcs = [
        p for p in (ROOT / "ui").rglob("*") if p.is_file() and "node_modules" not in p.parts and "dist" not in p.parts
    ]
    index = DIST / "index.html"
    if index.exists() and index.stat().st_mtime >= max(p.stat().st_mtime for p in srcs):
        return
    ui = ROOT / "ui"
    if not (ui / "node_modules" / ".installed").exists():
        # From the lock only, as `make ui` does: a lock npm ci cannot install is a failure here.
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ui, check=True, timeout=600)
        (ui / "node_modules" / ".installed").touch()
    subprocess.run(["npm", "run", "--silent", "build"], cwd=ui, check=True, timeout=600)


class Sim:
    """The simulator publishing live in this event loop until stopped."""

    def __init__(self, nc, hosts: list[str], interval: float) -> None:
        self.sim = Simulator(hosts, interval=interval, seed=7)
        self.nc = nc
        self.task: asyncio.Task | None = None

    async def start(self, history_rounds: int = 0, history_interval: float = 5.0) -> Sim:
        await self.sim.publish_infos(self.nc)
        if history_rounds:
            past = Simulator(self.sim.host_ids, interval=history_interval, seed=3, boot=self.sim.boot - 1)
            await past.publish(self.nc, past.history(history_rounds, end=time.time() - 2))
        conns = dict.fromkeys(self.sim.host_ids, self.nc)
        self.task = asyncio.create_task(self.sim.run(conns, snapshot_every=2))
        return self

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


APP_SCRIPT = """
import itertools, sys, time
for i in itertools.count():
    level = "WARNING" if i % 5 == 4 else "INFO"
    print(f"{level} ui line {i}", flush=True)
    time.sleep(0.4)
"""

RULES = {
    "rules": [
        # Always true for the simulated host: an alert that fires on the first frame.
        {
            "name": "ui-cpu",
            "kind": "metric",
            "field": "cpu.percent",
            "op": ">=",
            "threshold": 0.0,
            "for_s": 0,
            "severity": "warning",
            "hosts": [COMMANDER_HOST],
            "summary": "CPU seen (UI test rule)",
        },
    ]
}


@contextlib.asynccontextmanager
async def ui_stack(
    nats_stack,
    pg_cluster,
    workdir: Path,
    *,
    sim_hosts: int = 20,
    interval: float = 1.0,
    history_rounds: int = 60,
    commander: bool = True,
    alerter: bool = True,
):
    from libs.runtime import connect
    from libs.runtime.db import migrate
    from libs.runtime.jetstream import provision
    from tests.conftest import service_env
    from tests.support.commander import CommanderProcess
    from tests.support.gateway import create_database, drop_database, running_gateway
    from tests.support.pipeline import Proc, start_ingest
    from tests.support.replicator import REPLICATOR_MIGRATIONS, ReplicatorProcess, replicator_env

    build_ui()
    d = workdir / f"ui-{secrets.token_hex(3)}"
    d.mkdir(parents=True)
    admin = await connect(nats_stack.settings("admin"), "ui-setup", retry_forever=False)
    await provision(admin)
    dsn = await create_database(pg_cluster.dsn, "ui")
    procs: list = []
    dsns: list[str] = []
    cp = None
    sim = None
    try:
        ingest = start_ingest(nats_stack, dsn, d / "ingest.log")
        procs.append(ingest)
        if alerter:
            (d / "rules.json").write_text(json.dumps(RULES))
            procs.append(
                Proc(
                    "services.alerter",
                    service_env(
                        **nats_stack.env(),
                        FLEETWATCH_ALERTER_RULES_FILE=str(d / "rules.json"),
                        FLEETWATCH_ALERTER_BUILTIN_RULES="false",
                        FLEETWATCH_ALERTER_RUN_CHECKS="false",
                    ),
                    d / "alerter.log",
                )
            )
        if commander:
            (d / "app.py").write_text(APP_SCRIPT)
            # One operation per app per 0.2 s: the tests act on the app right after the fixture starts it,
            # which the default 1 s would refuse (429) on a fast machine.
            cp = CommanderProcess(
                service_env(**nats_stack.env(host=COMMANDER_HOST)),
                d / "state",
                d / "commander.log",
                rate_per_app_s="0.2",
            ).start()
            await cp.wait_ready(admin, COMMANDER_HOST)
        hosts = [COMMANDER_HOST, *host_ids(sim_hosts - 1)]
        with running_gateway(nats_stack, dsn, d / "gw") as gw:
            if commander:
                # The host's replicator (after the gateway made the users table): the users page's replication status.
                local_dsn = await create_database(pg_cluster.dsn, "uilocal")
                dsns.append(local_dsn)
                conn = await asyncpg.connect(local_dsn)
                try:
                    await migrate(conn, "replicator", REPLICATOR_MIGRATIONS)
                finally:
                    await conn.close()
                procs.append(
                    ReplicatorProcess(
                        replicator_env(service_env, nats_stack.env(host=COMMANDER_HOST), dsn, local_dsn, interval=3600),
                        d / "replicator.log",
                    ).start()
                )
            sim = await Sim(admin, hosts, interval).start(history_rounds)
            yield UIStack(gw, dsn, d, hosts, sim)
    finally:
        if sim:
            await sim.stop()
        if cp:
            cp.stop()
            cp.kill_children()
        for p in procs:
            p.stop()
        await admin.close()
        for x in [dsn, *dsns]:
            await drop_database(pg_cluster.dsn, x)


class UIStack:
    def __init__(self, gw, dsn: str, dir: Path, hosts: list[str], sim: Sim) -> None:
        self.gw = gw
        self.dsn = dsn
        self.dir = dir
        self.hosts = hosts
        self.sim = sim
        self.passwords: dict[str, str] = {"admin": gw.admin_password}

    def user(self, role: str) -> tuple[str, str]:
        """A user of `role` with a known password (made on first use)."""
        name = "admin" if role == "admin" else f"ui-{role}"
        if name not in self.passwords:
            pw = secrets.token_urlsafe(12)
            r = httpx.post(
                f"{self.gw.url}/api/v1/users",
                json={"username": name, "password": pw, "role": role},
                headers=self.gw.headers("admin"),
                timeout=30,
            )
            r.raise_for_status()
            self.passwords[name] = pw
        return name, self.passwords[name]


@contextlib.asynccontextmanager
async def browser(viewport: dict | None = None):
    from playwright.async_api import async_playwright

    profile = Path(tempfile.mkdtemp(prefix="fleetwatch-chromium-"))
    async with async_playwright() as p:
        ctx = await p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=viewport or {"width": 1280, "height": 800},
            color_scheme="dark",
        )
        try:
            yield ctx
        finally:
            await ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


async def login(page, base_url: str, username: str, password: str, path: str = "/fleet") -> None:
    # English texts whatever an earlier tab chose (the language is kept in localStorage).
    await page.add_init_script("localStorage.setItem('fleetwatch.lang', 'en')")
    await page.goto(f"{base_url}/#{path}")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.get_by_test_id("role").wait_for(timeout=15000)


async def shot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=False)
    return path
