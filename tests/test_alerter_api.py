"""The alerter's run-time API, notifier details (TLS email, retries, unconfigured, write-only
secrets, test-send), grouping, app/replication rules, dead letters, and the state machine."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import msgspec
import nats.js.errors
import pytest

from libs.schemas import encode, subjects
from libs.schemas.alerting import (
    AlertRecord,
    Check,
    ConfigDelete,
    ConfigList,
    ConfigPut,
    Matcher,
    Notifier,
    NotifierTestSend,
    Rule,
    Silence,
)
from libs.schemas.events import AppStatus, ReplicationStatus
from services.alerter.machine import COLD, HOLD, HOT, Instance, decide
from tests.support.alerting import (
    BotApiServer,
    SmtpServer,
    api,
    frame,
    reset_alerting,
    self_signed,
    start_alerter,
    stop_alerter,
)
from tests.support.eventually import eventually

TOKEN = "555:api-bot-token-SECRET-q"


@pytest.fixture
async def alerter(nc, nats_stack):
    await reset_alerting(nc)
    a = await start_alerter(nats_stack)
    yield a
    await stop_alerter(a)


@pytest.fixture
def bot():
    s = BotApiServer(TOKEN).start()
    yield s
    s.stop()


# --- the state machine, as pure functions ---


def _never(rec, now):
    return False


def test_state_machine_pending_firing_resolved_and_repeat():
    inst = Instance(rule="r", kind="metric", host="h", labels={}, severity="warning", for_s=60, threshold=90)
    assert decide(None, COLD, 0, inst, 1.0, 300, _never) is None
    rec, kind = decide(None, HOT, 0, inst, 95.0, 300, _never)
    assert rec.state == "pending" and kind is None
    assert decide(rec, HOT, 30, inst, 95.0, 300, _never) is None  # not yet `for`
    assert decide(rec, HOLD, 45, inst, 85.0, 300, _never) is None  # hysteresis band keeps it pending
    rec, kind = decide(rec, HOT, 60, inst, 96.0, 300, _never)
    assert rec.state == "firing" and kind == "firing" and rec.active_since == 0
    assert decide(rec, HOT, 200, inst, 96.0, 300, _never) is None
    assert decide(rec, HOLD, 250, inst, 85.0, 300, _never) is None
    rec2, kind = decide(rec, HOT, 360, inst, 97.0, 300, _never)
    assert kind == "repeat" and rec2.notify_count == 2
    rec3, kind = decide(rec2, COLD, 400, inst, 70.0, 300, _never)
    assert rec3.state == "resolved" and kind == "resolved"
    assert decide(rec3, COLD, 410, inst, 70.0, 300, _never) is None
    rec4, kind = decide(rec3, HOT, 500, inst, 95.0, 300, _never)
    assert rec4.state == "pending" and rec4.notified == "" and rec4.active_since == 500


def test_silenced_firing_is_notified_when_the_silence_ends():
    inst = Instance(rule="r", kind="metric", host="h", labels={}, severity="warning")
    rec, kind = decide(None, HOT, 0, inst, 1.0, 0, lambda r, now: now < 100)
    assert rec.state == "firing" and kind is None and rec.notified == ""
    assert decide(rec, HOT, 50, inst, 1.0, 0, lambda r, now: now < 100) is None
    rec, kind = decide(rec, HOT, 150, inst, 1.0, 0, lambda r, now: now < 100)
    assert kind == "firing"


# --- API: validation, write-only secrets ---


async def test_bad_requests_get_400_with_a_reason(alerter, nc):
    r = await api(nc, "rules", "put", ConfigPut(rule=Rule(name="x", field="cpu.nope", threshold=1)))
    assert not r.ok and r.code == 400 and "unknown metric field" in r.error
    r = await api(nc, "rules", "put", ConfigPut(rule=Rule(name="bad name!", field="cpu.percent", threshold=1)))
    assert r.code == 400 and "rule name" in r.error
    r = await api(nc, "rules", "put", ConfigPut(rule=Rule(name="hy", field="cpu.percent", threshold=80, resolve=90)))
    assert r.code == 400 and "resolve" in r.error
    r = await api(nc, "checks", "put", ConfigPut(check=Check(name="c", url="file:///etc/passwd")))
    assert r.code == 400 and "http" in r.error
    r = await api(
        nc,
        "silences",
        "put",
        ConfigPut(silence=Silence(id="s", matchers=[Matcher(name="host", value="(", op="=~")], starts=0, ends=10)),
    )
    assert r.code == 400 and "regex" in r.error
    r = await api(nc, "silences", "put", ConfigPut(silence=Silence(id="s", matchers=[], starts=0, ends=10)))
    assert r.code == 400 and "matcher" in r.error
    r = await api(nc, "rules", "put", ConfigPut())
    assert r.code == 400
    msg = await nc.request(subjects.alerting("rules", "put"), b"{not json", timeout=5)
    assert b'"code":400' in msg.data and b"malformed JSON" in msg.data
    r = await api(nc, "widgets", "list")
    assert r.code == 404
    r = await api(nc, "rules", "delete", ConfigDelete(name="never-was"))
    assert r.code == 404
    assert (await api(nc, "rules", "list")).rules == []


async def test_rules_edited_at_run_time_take_effect(alerter, nc):
    host = f"rt-{uuid.uuid4().hex[:6]}"
    js = nc.jetstream()
    await js.publish(subjects.metrics(host), encode(frame(host, time.time(), 1, mem=97)))
    await eventually(lambda: alerter.frames >= 1, 10)
    assert (await api(nc, "alerts", "list")).alerts == []
    r = await api(
        nc,
        "rules",
        "put",
        ConfigPut(rule=Rule(name="mem_high", field="mem.percent", threshold=95, labels={"team": "infra"})),
    )
    assert r.ok and r.rules[0].labels == {"team": "infra"}
    await js.publish(subjects.metrics(host), encode(frame(host, time.time(), 2, mem=97)))
    await eventually(lambda: any(r.host == host for r in alerter.state.active()), 10)
    alerts = (await api(nc, "alerts", "list")).alerts
    assert [(x.rule, x.host, x.state, x.labels["team"]) for x in alerts] == [("mem_high", host, "firing", "infra")]
    assert (await api(nc, "rules", "delete", ConfigDelete(name="mem_high"))).ok
    assert (await api(nc, "rules", "list", ConfigList(name="mem_high"))).code == 404


async def test_notifier_secrets_are_write_only(alerter, nc, bot, caplog):
    caplog.set_level(logging.DEBUG)
    n = Notifier(name="tg", kind="telegram", base_url=bot.url, bot_token=TOKEN, chat_id="1")
    r = await api(nc, "notifiers", "put", ConfigPut(notifier=n))
    raw = encode(r)
    assert r.ok and r.notifiers[0].bot_token_set and TOKEN.encode() not in raw
    # An edit without the secret keeps it.
    r = await api(
        nc, "notifiers", "put", ConfigPut(notifier=Notifier(name="tg", kind="telegram", base_url=bot.url, chat_id="2"))
    )
    assert r.notifiers[0].bot_token_set and r.notifiers[0].chat_id == "2"
    listing = await nc.request(subjects.alerting("notifiers", "list"), b"{}", timeout=5)
    assert TOKEN.encode() not in listing.data and b'"bot_token_set":true' in listing.data
    r = await api(nc, "notifiers", "test", NotifierTestSend(name="tg", text="hello from the test"))
    assert (
        r.ok
        and len(bot.messages) == 1
        and bot.messages[0]["chat_id"] == "2"
        and "hello from the test" in bot.texts()[0]
    )
    # A wrong token: a clear error, and the token is not in it.
    await api(
        nc,
        "notifiers",
        "put",
        ConfigPut(
            notifier=Notifier(
                name="tg-bad", kind="telegram", base_url=bot.url, bot_token="999:wrong-SECRET-token", chat_id="1"
            )
        ),
    )
    r = await api(nc, "notifiers", "test", NotifierTestSend(name="tg-bad"))
    assert not r.ok and r.code == 502 and "401" in r.error and "wrong-SECRET" not in r.error
    assert TOKEN not in caplog.text and "wrong-SECRET" not in caplog.text


async def test_telegram_retries_with_backoff(alerter, nc, bot):
    await api(
        nc,
        "notifiers",
        "put",
        ConfigPut(notifier=Notifier(name="tg", kind="telegram", base_url=bot.url, bot_token=TOKEN, chat_id="1")),
    )
    bot.fail_next = 2
    r = await api(nc, "notifiers", "test", NotifierTestSend(name="tg"))
    assert r.ok and len(bot.messages) == 1 and bot.requests == 3


async def test_email_over_implicit_tls(alerter, nc, workdir):
    cert, key = self_signed(workdir / "alerter-tls")
    smtp = SmtpServer(cert, key, mode="tls").start()
    try:
        n = Notifier(
            name="mail",
            kind="email",
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            smtp_tls="tls",
            smtp_user=smtp.user,
            smtp_password=smtp.password,
            smtp_ca_file=str(cert),
            mail_from="a@example.test",
            mail_to=["b@example.test"],
        )
        await api(nc, "notifiers", "put", ConfigPut(notifier=n))
        r = await api(nc, "notifiers", "test", NotifierTestSend(name="mail", text="tls works"))
        assert r.ok, r.error
        assert len(smtp.messages) == 1 and "tls works" in smtp.bodies()[0]
        # Wrong password: refused, reported without the password.
        await api(
            nc,
            "notifiers",
            "put",
            ConfigPut(
                notifier=Notifier(
                    **{**{f: getattr(n, f) for f in n.__struct_fields__}, "smtp_password": "not-the-pass-SECRET"}
                )
            ),
        )
        r = await api(nc, "notifiers", "test", NotifierTestSend(name="mail"))
        assert not r.ok and "not-the-pass-SECRET" not in r.error
    finally:
        smtp.stop()


async def test_unconfigured_notifier_is_skipped_with_one_log_line(alerter, nc, caplog):
    caplog.set_level(logging.INFO, logger="alerter.notify")
    host = f"un-{uuid.uuid4().hex[:6]}"
    await api(nc, "rules", "put", ConfigPut(rule=Rule(name="cpu_any", field="cpu.percent", threshold=50)))
    js = nc.jetstream()
    for i in range(3):  # three separate alerts (fire, resolve, fire)
        await js.publish(subjects.metrics(host), encode(frame(host, time.time() + i, i, cpu=90 if i != 1 else 10)))
    await eventually(lambda: alerter.frames >= 3, 10)
    await alerter.dispatcher.idle()
    lines = [r.getMessage() for r in caplog.records if "not configured" in r.getMessage()]
    # The environment's telegram, email and webhook notifiers are empty: one line each.
    assert sorted(line.split()[1] for line in lines) == ["email", "telegram", "webhook"]


async def test_grouping_puts_simultaneous_alerts_in_one_message(nc, nats_stack, bot):
    await reset_alerting(nc)
    a = await start_alerter(nats_stack, group_wait_s=0.5)
    try:
        await api(
            nc,
            "notifiers",
            "put",
            ConfigPut(notifier=Notifier(name="tg", kind="telegram", base_url=bot.url, bot_token=TOKEN, chat_id="1")),
        )
        await api(
            nc, "rules", "put", ConfigPut(rule=Rule(name="disk_full", field="disk.percent", threshold=90, resolve=85))
        )
        tag = uuid.uuid4().hex[:6]
        now = time.time()
        frames = [frame(f"g{i}-{tag}", now, 1, disks=[("/", 95.0), ("/data", 50.0)]) for i in range(3)]
        for f in frames:
            await nc.jetstream().publish(subjects.metrics(f.host), encode(f))
        await eventually(lambda: len(bot.messages) >= 1, 10)
        await asyncio.sleep(0.8)
        assert len(bot.messages) == 1
        text = bot.texts()[0]
        assert (
            text.startswith("3 alerts")
            and all(f.host in text for f in frames)
            and "mount=/" in text
            and "/data" not in text
        )
    finally:
        await stop_alerter(a)


async def test_app_crash_and_replication_failure_alert(nc, nats_stack):
    await reset_alerting(nc)
    a = await start_alerter(nats_stack, builtin_rules=True)
    try:
        host = f"ap-{uuid.uuid4().hex[:6]}"
        js = nc.jetstream()
        await js.publish(
            subjects.apps(host), encode(AppStatus(host=host, app="web", state="crashed", ts=time.time(), exit_code=1))
        )
        await js.publish(
            subjects.replica(host), encode(ReplicationStatus(host=host, ts=time.time(), ok=False, error="db down"))
        )

        def firing() -> set:
            return {
                (r.rule, r.labels.get("app", "")) for r in a.state.active() if r.host == host and r.state == "firing"
            }

        await eventually(lambda: firing() == {("app_failed", "web"), ("replica_failing", "")}, 10)
        await js.publish(subjects.apps(host), encode(AppStatus(host=host, app="web", state="running", ts=time.time())))
        await js.publish(subjects.replica(host), encode(ReplicationStatus(host=host, ts=time.time(), ok=True)))
        await eventually(lambda: firing() == set(), 10)
    finally:
        await stop_alerter(a)


async def test_malformed_frame_is_dead_lettered(alerter, nc):
    got = []

    async def cb(msg):
        got.append(msg)

    sub = await nc.subscribe(subjects.deadletter("alerter"), cb=cb)
    await nc.jetstream().publish("fleet.metrics.broken-host", b'{"host": "broken-host", "cpu": "lots"}')
    await eventually(lambda: got, 10)
    assert (
        got[0].headers["Fleet-Subject"] == "fleet.metrics.broken-host"
        and "MetricFrame" in got[0].headers["Fleet-Reason"]
    )
    assert alerter.bad_messages == 1
    # A frame claiming another host than its subject's is refused the same way.
    await nc.jetstream().publish("fleet.metrics.host-x", encode(frame("host-y", time.time(), 1)))
    await eventually(lambda: len(got) == 2, 10)
    assert "does not match" in got[1].headers["Fleet-Reason"]
    await sub.unsubscribe()


def test_template_is_readable():
    from services.alerter.notify.templates import Note, render

    rec = AlertRecord(
        fingerprint="abc",
        rule="cpu_hot",
        kind="metric",
        host="web-1",
        state="firing",
        since=1000,
        active_since=940,
        severity="critical",
        value=95.5,
        threshold=90,
        field="cpu.percent",
        summary="CPU hot",
    )
    assert (
        "\n"
        not in render([Note(record=msgspec.structs.replace(rec, summary="two\nlines"), kind="firing")], 1060, "u")[0]
    )
    subject, text = render([Note(record=rec, kind="firing")], 1060, "https://fleet.example")
    assert subject == "[FIRING] CPU hot on web-1"
    assert (
        "host web-1" in text
        and "value: 95.5% (threshold 90.0%)" in text
        and "(2m ago)" in text
        and "https://fleet.example/#/alerts/abc" in text
    )
    assert json.dumps(text)  # plain text, no markup to escape


async def test_ended_alerts_are_pruned_from_kv(alerter, nc):
    host = f"pr-{uuid.uuid4().hex[:6]}"
    await api(nc, "rules", "put", ConfigPut(rule=Rule(name="cpu_prune", field="cpu.percent", threshold=50)))
    t0 = time.time()
    await alerter.engine.on_frame(frame(host, t0, 1, cpu=90), t0)
    await alerter.engine.on_frame(frame(host, t0 + 5, 2, cpu=10), t0 + 5)
    fps = [fp for fp, r in alerter.state.records.items() if r.host == host]
    assert len(fps) == 1 and alerter.state.records[fps[0]].state == "resolved"
    assert await alerter.state.prune(t0 + 100, older_than=3600) == 0  # too recent
    assert await alerter.state.prune(t0 + 7200, older_than=3600) == 1
    kv = await nc.jetstream().key_value("alert_state")
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get(fps[0])


async def test_check_lease_one_prober_and_takeover(nc, nats_stack):
    from tests.support.alerting import FakeClock, TargetServer

    await reset_alerting(nc)
    target = TargetServer().start()
    clock = FakeClock()
    a = await start_alerter(nats_stack, clock, consume=False)
    b = await start_alerter(nats_stack, clock, consume=False)
    try:
        await a.api.put("check", Check(name="leased", url=f"{target.url}/health", interval_s=10, timeout_s=1))
        await eventually(lambda: "leased" in b.prober.checks, 5)  # b saw the edit through the KV watch
        assert (await a.prober.probe_once("leased")) is not None
        await eventually(lambda: b.state.leases.get("lease.leased", (None, 0))[0] is not None, 5)
        assert (await b.prober.probe_once("leased")) is None and b.prober.skipped == 1
        clock.advance(10)
        assert (await a.prober.probe_once("leased")) is not None  # the holder renews
        # The holder stops renewing (crashed): after the lease runs out, the other takes over.
        clock.advance(2 * 10 + 1 + 1.5)
        assert (await b.prober.probe_once("leased")) is not None
        await eventually(lambda: a.state.leases["lease.leased"][0].owner == b.instance_id, 5)
        assert (await a.prober.probe_once("leased")) is None
    finally:
        await stop_alerter(b)
        await stop_alerter(a)
        target.stop()
