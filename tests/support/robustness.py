"""The whole fleet as real subprocesses (collector, ingest, commander, replicator, alerter, gateway)
on one host, every one logging at DEBUG to its own file: for the robustness and secrets audits."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg

from libs.runtime.db import migrate
from tests.conftest import ROOT, service_env
from tests.support.commander import CommanderProcess, ctl
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.pipeline import Proc, start_collector, start_ingest
from tests.support.replicator import ReplicatorProcess, replicator_env

HOST = "host-a"
DEBUG = {"FLEETWATCH_LOG_LEVEL": "DEBUG"}


class Fleet:
    """Start with `await Fleet(stack, dsn, local_dsn, workdir).start(nc, **alerter_env)`;
    `stop()` ends every process; `logs()` is every service's log by name."""

    def __init__(self, stack, dsn: str, local_dsn: str, workdir: Path) -> None:
        self.stack, self.dsn, self.local_dsn = stack, dsn, local_dsn
        self.dir = Path(workdir) / f"fleet-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir(parents=True)
        self.procs: dict[str, object] = {}
        self.gw: GatewayProcess | None = None
        self.gateway_settings: dict[str, str] = {}  # FLEETWATCH_GATEWAY_<NAME> settings, set before start

    async def start(self, nc, **alerter_env: str) -> Fleet:
        conn = await asyncpg.connect(self.local_dsn)
        try:
            await migrate(conn, "replicator", ROOT / "services" / "replicator" / "migrations")
        finally:
            await conn.close()
        d, st = self.dir, self.stack
        self.procs["ingest"] = start_ingest(st, self.dsn, d / "ingest.log", **DEBUG)
        self.procs["collector"] = start_collector(
            st,
            HOST,
            d / "collector.log",
            FLEETWATCH_COLLECTOR_INTERVAL="0.5",
            FLEETWATCH_COLLECTOR_PROCS_INTERVAL="1",
            **DEBUG,
        )
        alerter = {
            "FLEETWATCH_ALERTER_BUILTIN_RULES": "false",
            "FLEETWATCH_ALERTER_RUN_CHECKS": "false",
            "FLEETWATCH_ALERTER_LOOKBACK_S": "0",
            **alerter_env,
        }
        self.procs["alerter"] = Proc(
            "services.alerter", service_env(**st.env("alerter"), **alerter, **DEBUG), d / "alerter.log"
        )
        self.procs["commander"] = CommanderProcess(
            service_env(**st.env(host=HOST), **DEBUG), d / "commander-state", d / "commander.log"
        ).start()
        # The gateway migrates the central users table the replicator reads: it starts first.
        self.gw = await asyncio.to_thread(
            start_gateway, {**st.env("gateway"), **DEBUG}, self.dsn, d / "gateway", timeout=90, **self.gateway_settings
        )
        env = replicator_env(
            service_env,
            st.env(host=HOST),
            self.dsn,
            self.local_dsn,
            interval=3600,
            debounce=0.1,
            retry_min=0.25,
            retry_max=1.0,
        )
        env.update(DEBUG)
        self.procs["replicator"] = ReplicatorProcess(env, d / "replicator.log").start()
        await self.procs["commander"].wait_ready(nc, HOST, timeout=60)
        await self._ready(nc)
        return self

    async def _ready(self, nc, timeout: float = 60) -> None:
        """Every service answering: a sample, a sync, an alerting list, and ingest consuming."""
        from libs.schemas import subjects

        deadline = time.monotonic() + timeout
        pending = {
            "collector": subjects.sample(HOST),
            "replicator": subjects.sync(HOST),
            "alerter": subjects.alerting("alerts", "list"),
        }
        while pending and time.monotonic() < deadline:
            self.check_alive()
            for name, subject in list(pending.items()):
                try:
                    await nc.request(subject, b"", timeout=2)
                    del pending[name]
                except Exception:
                    pass
            if pending:
                await asyncio.sleep(0.2)
        if pending:
            raise AssertionError(f"not answering within {timeout}s: {sorted(pending)}\n{self.tails()}")
        while b'"ready"' not in (self.dir / "ingest.log").read_bytes():
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"ingest not ready\n{self.tails()}")
            await asyncio.sleep(0.2)

    def popen(self, name: str):
        return self.gw.proc if name == "gateway" else self.procs[name].proc

    def check_alive(self) -> None:
        dead = {n: self.popen(n).poll() for n in [*self.procs, "gateway"] if self.popen(n).poll() is not None}
        assert not dead, f"services exited: {dead}\n{self.tails()}"

    def logs(self) -> dict[str, str]:
        out = {n: (self.dir / f"{n}.log").read_text(errors="replace") for n in self.procs}
        out["gateway"] = self.gw.log() if self.gw else ""
        return out

    def tails(self, n: int = 1500) -> str:
        return "\n".join(f"--- {k}\n{v[-n:]}" for k, v in self.logs().items())

    async def ctl(self, nc, verb: str, body: dict, **kw):
        return await ctl(nc, HOST, verb, body, **kw)

    def stop(self) -> None:
        for name in ("replicator", "collector", "alerter", "ingest"):
            p = self.procs.get(name)
            if p is not None:
                p.stop()
        cmd = self.procs.get("commander")
        if cmd is not None:
            cmd.stop()
            cmd.kill_children()
        if self.gw is not None:
            self.gw.stop()
