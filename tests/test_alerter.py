"""Alerter against real NATS, real HTTP targets, a local Bot API server and a real SMTP server."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import time
import uuid

import pytest

from libs.schemas import Codec, encode, subjects
from libs.schemas.alerting import Check, ConfigPut, Matcher, Notifier, Rule, Silence
from libs.schemas.events import AlertEvent, HealthResult
from services.alerter.notify.transports import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.support.alerting import (
    BotApiServer,
    FakeClock,
    SmtpServer,
    TargetServer,
    WebhookReceiver,
    api,
    frame,
    reset_alerting,
    self_signed,
    start_alerter,
    stop_alerter,
)
from tests.support.eventually import eventually

TOKEN = "123456:bot-token-SECRET-abc"
EVENT = Codec(AlertEvent)
HEALTH = Codec(HealthResult)


@pytest.fixture
async def clean(nc):
    await reset_alerting(nc)
    yield nc


@pytest.fixture(scope="module")
def certs(workdir):
    return self_signed(workdir / "alerter-certs")


@pytest.fixture
def bot():
    s = BotApiServer(TOKEN).start()
    yield s
    s.stop()


@pytest.fixture
def target():
    s = TargetServer().start()
    yield s
    s.stop()


@pytest.fixture
def hook():
    s = WebhookReceiver().start()
    yield s
    s.stop()


@pytest.fixture
def smtp(certs):
    s = SmtpServer(*certs, mode="starttls").start()
    yield s
    s.stop()


def tg_notifier(bot, **kw) -> Notifier:
    return Notifier(name="tg", kind="telegram", base_url=bot.url, bot_token=TOKEN, chat_id="42", **kw)


def mail_notifier(smtp, certs, tls="starttls", **kw) -> Notifier:
    return Notifier(
        name=kw.pop("name", "mail"),
        kind="email",
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_tls=tls,
        smtp_user=smtp.user,
        smtp_password=smtp.password,
        smtp_ca_file=str(certs[0]),
        mail_from="fleetwatch@example.test",
        mail_to=["ops@example.test"],
        **kw,
    )


async def collect(nc, subject: str, codec: Codec) -> tuple[list, object]:
    got: list = []

    async def cb(msg):
        got.append(codec.decode(msg.data))

    sub = await nc.subscribe(subject, cb=cb)
    await nc.flush()
    return got, sub


async def test_check_fails_twice_one_telegram_one_email_recovers_once_repeats_hourly(
    clean, nats_stack, bot, smtp, certs, target
):
    nc = clean
    clock = FakeClock()
    a = await start_alerter(nats_stack, clock, consume=False, repeat_interval_s=900)
    try:
        check = Check(
            name=f"api-{uuid.uuid4().hex[:6]}",
            url=f"{target.url}/health",
            interval_s=60,
            json_field="status",
            json_value="ok",
        )
        assert (await api(nc, "notifiers", "put", ConfigPut(notifier=tg_notifier(bot)))).ok
        assert (await api(nc, "notifiers", "put", ConfigPut(notifier=mail_notifier(smtp, certs)))).ok
        r = await api(nc, "checks", "put", ConfigPut(check=check))
        assert r.ok and r.checks[0].failure_threshold == 2 and r.checks[0].timeout_s == 5  # the seeds' defaults
        results, sub = await collect(nc, subjects.health(check.name), HEALTH)

        async def probe() -> None:
            await a.prober.probe_once(check.name)
            await a.dispatcher.idle()
            clock.advance(60)

        await probe()  # healthy
        target.set(500)
        await probe()  # first failure: nothing yet
        assert bot.messages == [] and smtp.messages == []
        await probe()  # second consecutive failure: alert
        assert len(bot.messages) == 1 and len(smtp.messages) == 1
        text = bot.texts()[0]
        assert (
            "FIRING" in text and check.name in text and "HTTP 500" in text and "/alerts/" in text and "since:" in text
        )
        mail = email.message_from_string(smtp.bodies()[0], policy=email.policy.default)
        assert mail["Subject"].strip().startswith("[FIRING]") and check.name in mail.get_content()
        assert bot.messages[0]["chat_id"] == "42"

        target.set(200)
        await probe()
        await probe()
        assert len(bot.messages) == 2 and len(smtp.messages) == 2
        assert "RESOLVED" in bot.texts()[1] and "RESOLVED" in smtp.bodies()[1]

        # Down for an hour of simulated time, probed every minute: one alert, then one
        # reminder per repeat interval (15 min), nothing in between.
        target.set(503)
        await probe()
        await probe()
        assert len(bot.messages) == 3
        for k in range(1, 61):
            await probe()
            assert len(bot.messages) == 3 + k // 15, f"after {k} min down"
        assert len(bot.messages) == 7 and len(smtp.messages) == 7
        assert all("STILL FIRING" in t for t in bot.texts()[3:])

        await nc.flush()
        await eventually(lambda: len(results) >= 66, 5)
        assert [x.consecutive_failures for x in results[:4]] == [0, 1, 2, 0]
        assert results[2].status_code == 500 and not results[2].ok and results[2].latency_ms is not None
        await sub.unsubscribe()
    finally:
        await stop_alerter(a)


async def test_json_expectation_and_timeout(clean, nats_stack, target):
    a = await start_alerter(nats_stack, FakeClock(), consume=False)
    try:
        await a.api.put(
            "check",
            Check(name="jsonchk", url=f"{target.url}/health", json_field="status", json_value="ok", timeout_s=0.5),
        )
        target.set(200, {"status": "degraded"})
        r = await a.prober.probe_once("jsonchk")
        assert not r.ok and "degraded" in r.error and r.consecutive_failures == 1
        target.set(200, {"status": "ok"})
        assert (await a.prober.probe_once("jsonchk")).ok
        await a.api.put("check", Check(name="deadchk", url="http://127.0.0.1:9/health", timeout_s=0.5))
        r = await a.prober.probe_once("deadchk")
        assert not r.ok and r.error and r.status_code is None
    finally:
        await stop_alerter(a)


async def publish_frames(nc, frames) -> None:
    js = nc.jetstream()
    for f in frames:
        await js.publish(subjects.metrics(f.host), encode(f), headers={"Nats-Msg-Id": f.msg_id})


async def test_hysteresis_oscillation_does_not_flap(clean, nats_stack, hook):
    nc = clean
    host = f"hy-{uuid.uuid4().hex[:6]}"
    a = await start_alerter(nats_stack)
    try:
        secret = "whsec-0123456789"
        await api(
            nc,
            "notifiers",
            "put",
            ConfigPut(
                notifier=Notifier(
                    name="hook",
                    kind="webhook",
                    url=hook.url,
                    webhook_secret=secret,
                    matchers=[Matcher(name="rule", value="cpu_hot")],
                )
            ),
        )
        await api(
            nc,
            "rules",
            "put",
            ConfigPut(
                rule=Rule(
                    name="cpu_hot", field="cpu.percent", op=">", threshold=90, for_s=60, resolve=80, severity="critical"
                )
            ),
        )
        # The same condition without hysteresis or `for`, to show what flapping would be.
        await api(nc, "rules", "put", ConfigPut(rule=Rule(name="cpu_naive", field="cpu.percent", op=">", threshold=90)))
        events, sub = await collect(nc, f"fleet.alerts.{host}.*", EVENT)

        t0 = time.time() - 3600
        values = [50.0] * 5 + [95.0 if i % 2 == 0 else 85.0 for i in range(60)] + [70.0] * 3
        frames = [frame(host, t0 + 5 * i, i, cpu=v) for i, v in enumerate(values)]
        await publish_frames(nc, frames)
        await eventually(lambda: a.frames >= len(frames), 20)
        await a.dispatcher.idle()
        await nc.flush()
        await asyncio.sleep(0.3)

        hot = [e.state for e in events if e.rule == "cpu_hot"]
        assert hot == ["pending", "firing", "resolved"]
        firing = next(e for e in events if e.rule == "cpu_hot" and e.state == "firing")
        assert firing.ts - firing.since >= 60  # held `for` a minute
        naive = [e.state for e in events if e.rule == "cpu_naive"]
        assert naive.count("firing") == 30 and naive.count("resolved") == 30  # what hysteresis prevents

        # Exactly two webhook calls (firing, resolved), only for the routed rule, signed.
        assert len(hook.received) == 2
        statuses = []
        for headers, body in hook.received:
            assert headers[SIGNATURE_HEADER.lower()] == sign(secret, headers[TIMESTAMP_HEADER.lower()], body)
            payload = json.loads(body)
            assert {x["rule"] for x in payload["alerts"]} == {"cpu_hot"}
            statuses.append(payload["status"])
        assert statuses == ["firing", "resolved"]
        await sub.unsubscribe()
    finally:
        await stop_alerter(a)


async def test_host_down_within_three_intervals_and_resolves(clean, nats_stack, bot):
    nc = clean
    host = f"hd-{uuid.uuid4().hex[:6]}"
    a = await start_alerter(nats_stack, ticks=True, tick_s=0.1)
    try:
        await api(nc, "notifiers", "put", ConfigPut(notifier=tg_notifier(bot)))
        await api(
            nc,
            "rules",
            "put",
            ConfigPut(rule=Rule(name="host_down", kind="host_down", missed_intervals=3, severity="critical")),
        )
        interval = 1.0
        js = nc.jetstream()
        for i in range(3):
            f = frame(host, time.time(), i, interval=interval)
            await js.publish(subjects.metrics(host), encode(f))
            await asyncio.sleep(interval)
        stopped = time.time() - interval  # the last frame went out one interval ago
        # A fixed quick pace: the latency below is measured from when this wait returns.
        await eventually(lambda: len(bot.messages) >= 1, 3 * interval + 3, interval=0.05)
        latency = time.time() - stopped
        assert latency <= 3 * interval + 1.0 + 0.5, latency  # 3 intervals + 1 s (+ poll slack)
        assert "FIRING" in bot.texts()[0] and host in bot.texts()[0]
        assert len(bot.messages) == 1

        await js.publish(subjects.metrics(host), encode(frame(host, time.time(), 10, interval=interval)))
        await eventually(lambda: len(bot.messages) >= 2, 5)
        assert "RESOLVED" in bot.texts()[1]
        await asyncio.sleep(0.5)
        assert len(bot.messages) == 2
    finally:
        await stop_alerter(a)


async def test_silence_suppresses_matching_only(clean, nats_stack, bot):
    nc = clean
    h1, h2 = f"s1-{uuid.uuid4().hex[:6]}", f"s2-{uuid.uuid4().hex[:6]}"
    a = await start_alerter(nats_stack)
    try:
        now = time.time()
        await api(nc, "notifiers", "put", ConfigPut(notifier=tg_notifier(bot)))
        await api(nc, "rules", "put", ConfigPut(rule=Rule(name="cpu_max", field="cpu.percent", threshold=90)))
        await api(nc, "rules", "put", ConfigPut(rule=Rule(name="mem_max", field="mem.percent", threshold=90)))
        r = await api(
            nc,
            "silences",
            "put",
            ConfigPut(
                silence=Silence(
                    id="",
                    matchers=[Matcher(name="host", value=h1), Matcher(name="alertname", value="cpu_max")],
                    starts=now - 10,
                    ends=now + 600,
                    comment="maintenance",
                )
            ),
        )
        assert r.ok and r.silences[0].id
        events, sub = await collect(nc, "fleet.alerts.*.*", EVENT)
        await publish_frames(nc, [frame(h1, now, 1, cpu=99, mem=99), frame(h2, now, 1, cpu=99, mem=10)])
        await eventually(lambda: a.frames >= 2, 10)
        await a.dispatcher.idle()
        await nc.flush()
        texts = bot.texts()
        assert len(texts) == 2, texts
        assert any("mem_max" in t and h1 in t for t in texts)  # same host, other rule: not silenced
        assert any("cpu_max" in t and h2 in t for t in texts)  # same rule, other host: not silenced
        assert not any("cpu_max" in t and h1 in t for t in texts)
        # The silenced alert is still tracked and published, only not notified.
        assert any(e.rule == "cpu_max" and e.host == h1 and e.state == "firing" for e in events)
        # When the silence is over, the still-firing alert is notified once.
        await a.engine.tick(now + 601)
        await a.dispatcher.idle()
        assert len(bot.messages) == 3 and "cpu_max" in bot.texts()[2] and h1 in bot.texts()[2]
        await a.engine.tick(now + 602)
        await a.dispatcher.idle()
        assert len(bot.messages) == 3
        await sub.unsubscribe()
    finally:
        await stop_alerter(a)
