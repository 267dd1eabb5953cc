"""Alerter processes (`python -m services.alerter`): a restart while an alert fires and a second
instance never send a notification twice; the rules file is loaded at start; secrets stay out of
the logs."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid

from libs.schemas import encode, subjects
from tests.conftest import ROOT, service_env
from tests.support.alerting import BotApiServer, TargetServer, frame, reset_alerting
from tests.support.eventually import eventually

TOKEN = "987654:ha-bot-token-SECRET-xyz"


def rules_file(path, target_url: str, bot_url: str, check: str) -> None:
    path.write_text(
        f"""
[[rules]]
name = "cpu_ha"
field = "cpu.percent"
op = ">"
threshold = 90.0
severity = "critical"

[[checks]]
name = "{check}"
url = "{target_url}/health"
interval_s = 0.3
timeout_s = 2.0

[[notifiers]]
name = "tg"
kind = "telegram"
base_url = "{bot_url}"
chat_id = "7"
bot_token = "env:HA_TEST_BOT_TOKEN"
"""
    )


class Proc:
    def __init__(self, env: dict, log_path) -> None:
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(
            [sys.executable, "-m", "services.alerter"], env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )

    def ready(self) -> bool:
        return b'"event": "ready"' in self.log_path.read_bytes()

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.log.close()
        return self.p.returncode


async def test_restart_and_second_instance_never_double_notify(nc, nats_stack, workdir):
    await reset_alerting(nc)
    bot = BotApiServer(TOKEN).start()
    target = TargetServer().start()
    check = f"ha-{uuid.uuid4().hex[:6]}"
    host = f"ha-{uuid.uuid4().hex[:6]}"
    d = workdir / f"alerter-ha-{check}"
    d.mkdir()
    rf = d / "rules.toml"
    rules_file(rf, target.url, bot.url, check)
    env = service_env(
        **nats_stack.env("alerter"),
        HA_TEST_BOT_TOKEN=TOKEN,
        FLEETWATCH_ALERTER_RULES_FILE=str(rf),
        FLEETWATCH_ALERTER_BUILTIN_RULES="false",
        FLEETWATCH_ALERTER_LOOKBACK_S="0",
        FLEETWATCH_ALERTER_GROUP_WAIT_S="0",
        FLEETWATCH_ALERTER_GROUP_INTERVAL_S="0",  # fire/resolve/fire within seconds; group pace: test_alerter_grouping
        FLEETWATCH_ALERTER_NOTIFY_BACKOFF_S="0.1",
    )
    procs: list[Proc] = []

    def start(name: str) -> Proc:
        p = Proc(env, d / f"{name}.log")
        procs.append(p)
        return p

    def count(word: str) -> int:
        return sum(1 for t in bot.texts() if word in t)

    try:
        a = start("a1")
        await eventually(a.ready, 30, context=lambda: a.log_path.read_text()[-3000:])
        target.set(500)
        await eventually(lambda: len(bot.messages) >= 1, 10)
        await asyncio.sleep(1.0)  # several more failing probes
        assert len(bot.messages) == 1 and "FIRING" in bot.texts()[0] and check in bot.texts()[0]

        # Restart while it fires: the new process reads the state from KV and stays quiet.
        assert a.stop() == 0
        a = start("a2")
        await eventually(a.ready, 30, context=lambda: a.log_path.read_text()[-3000:])
        await asyncio.sleep(1.5)
        assert len(bot.messages) == 1

        # A second instance beside it: still one notification per event, and the check is
        # probed by one of them at a time (its lease), not by both.
        b = start("b")
        await eventually(b.ready, 30, context=lambda: b.log_path.read_text()[-3000:])
        results = []

        async def on_result(msg):
            results.append(msg.data)

        sub = await nc.subscribe(subjects.health(check), cb=on_result)
        t0 = time.monotonic()
        await asyncio.sleep(3.0)
        await sub.unsubscribe()
        one_prober = (time.monotonic() - t0) / 0.3
        assert 0 < len(results) < 1.5 * one_prober, (len(results), one_prober)
        assert len(bot.messages) == 1

        target.set(200)
        await eventually(lambda: count("RESOLVED") >= 1, 10)
        await asyncio.sleep(1.5)
        assert len(bot.messages) == 2

        target.set(500)
        await eventually(lambda: len(bot.messages) >= 3, 10)
        await asyncio.sleep(1.5)
        assert len(bot.messages) == 3 and "FIRING" in bot.texts()[2]

        # A metric event seen by both instances (each has its own consumer): one message.
        await nc.jetstream().publish(subjects.metrics(host), encode(frame(host, time.time(), 1, cpu=99)))
        await eventually(lambda: count("cpu_ha") >= 1, 10)
        await asyncio.sleep(1.5)
        assert count("cpu_ha") == 1 and len(bot.messages) == 4
    finally:
        rcs = [p.stop() for p in procs]
        bot.stop()
        target.stop()
    assert rcs == [0] * len(rcs)
    logs = b"".join((d / f"{n}.log").read_bytes() for n in ("a1", "a2", "b"))
    assert TOKEN.encode() not in logs and b"rules file loaded" in logs


def test_bad_rules_file_stops_startup_with_a_reason(nats_stack, workdir):
    rf = workdir / "bad-rules.toml"
    rf.write_text('[[rules]]\nname = "x"\nfield = "cpu.nonsense"\nthreshold = 1\n')
    env = service_env(**nats_stack.env("alerter"), FLEETWATCH_ALERTER_RULES_FILE=str(rf))
    r = subprocess.run(
        [sys.executable, "-m", "services.alerter"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert r.returncode != 0
    assert "cpu.nonsense" in r.stderr and "unknown metric field" in r.stderr
