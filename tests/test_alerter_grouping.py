"""Notification groups against real NATS and a local Bot API server: after a group (rule) has
notified, what joins it (new alerts, resolves, repeats) goes out together no sooner than
`group_interval_s` after the flush, and the pace is kept in KV across a restart and a second
alerter."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from libs.schemas import encode, subjects
from libs.schemas.alerting import Notifier, Rule
from tests.support.alerting import BotApiServer, frame, reset_alerting, start_alerter, stop_alerter
from tests.support.eventually import eventually

TOKEN = "424242:group-bot-token-SECRET"


@pytest.fixture
async def clean(nc):
    await reset_alerting(nc)
    yield nc


@pytest.fixture
def bot():
    s = BotApiServer(TOKEN).start()
    yield s
    s.stop()


def tg(bot) -> Notifier:
    return Notifier(name="tg", kind="telegram", base_url=bot.url, bot_token=TOKEN, chat_id="42")


def about(bot, rule: str) -> list[str]:
    return [t for t in bot.texts() if rule in t]


async def test_group_interval_batches_follow_ups_resolves_and_repeats(clean, nats_stack, bot):
    """Simulated time: frames carry their own timestamps and the test ticks the engine."""
    gi, repeat = 60.0, 600.0
    a = await start_alerter(nats_stack, consume=False, group_wait_s=0.3, group_interval_s=gi, repeat_interval_s=repeat)
    tag = uuid.uuid4().hex[:5]
    h1, h2, h3 = (f"g{i}-{tag}" for i in (1, 2, 3))
    t0 = time.time()
    seq = iter(range(1, 1000))

    async def at(t: float, host: str, cpu: float = 10.0, mem: float = 10.0) -> None:
        await a.engine.on_frame(frame(host, t0 + t, next(seq), cpu=cpu, mem=mem), t0 + t)
        await a.dispatcher.idle()

    async def tick(t: float) -> None:
        await a.engine.tick(t0 + t)
        await a.dispatcher.idle()

    try:
        await a.api.put("notifier", tg(bot))
        await a.api.put("rule", Rule(name="cpu_grp", field="cpu.percent", threshold=90))
        await a.api.put("rule", Rule(name="mem_grp", field="mem.percent", threshold=90))

        await at(0, h1, cpu=99)  # the group's first notification: not held
        cpu = about(bot, "cpu_grp")
        assert len(cpu) == 1 and "FIRING" in cpu[0] and h1 in cpu[0]
        await at(1, h2, cpu=99)  # a moment later, past group_wait: held for the group's interval
        await at(2, h3, cpu=99)
        await tick(gi - 0.5)
        assert len(about(bot, "cpu_grp")) == 1
        assert {r.host: r.notified for r in a.state.active() if r.rule == "cpu_grp"} == {h1: "firing", h2: "", h3: ""}

        await at(3, h1, cpu=99, mem=99)  # another rule is another group: not held
        mem = about(bot, "mem_grp")
        assert len(mem) == 1 and "FIRING" in mem[0]

        await tick(gi)  # one batched follow-up with both, no sooner than the interval
        cpu = about(bot, "cpu_grp")
        assert len(cpu) == 2, cpu
        assert "FIRING" in cpu[1] and h2 in cpu[1] and h3 in cpu[1] and h1 not in cpu[1]
        await tick(gi + 1)
        assert len(about(bot, "cpu_grp")) == 2

        await at(gi + 2, h1, cpu=10, mem=99)  # a resolve waits for the group's next flush too
        await tick(2 * gi - 0.5)
        assert len(about(bot, "cpu_grp")) == 2
        await tick(2 * gi)
        cpu = about(bot, "cpu_grp")
        assert len(cpu) == 3 and "RESOLVED" in cpu[2] and h1 in cpu[2] and h2 not in cpu[2]

        # Unchanged since the follow-up at gi: h2 and h3 are repeated together, once.
        await tick(gi + repeat - 1)
        assert len(about(bot, "cpu_grp")) == 3
        await tick(gi + repeat)
        cpu = about(bot, "cpu_grp")
        assert len(cpu) == 4 and "STILL FIRING" in cpu[3] and h2 in cpu[3] and h3 in cpu[3]
        await tick(gi + repeat + 5)
        assert len(about(bot, "cpu_grp")) == 4
    finally:
        await stop_alerter(a)


async def test_group_pace_kept_by_a_second_alerter_and_across_a_restart(clean, nats_stack, bot):
    """Real time, two alerters consuming the same frames: one first message, one batched
    follow-up no sooner than group_interval; a replacement instance keeps the pace from KV."""
    nc = clean
    gi = 5.0
    settings = dict(ticks=True, tick_s=0.1, group_wait_s=0.3, group_interval_s=gi)
    a1 = await start_alerter(nats_stack, **settings)
    a2 = await start_alerter(nats_stack, **settings)
    live = [a1, a2]
    tag = uuid.uuid4().hex[:5]
    h1, h2, h3, h4 = (f"p{i}-{tag}" for i in (1, 2, 3, 4))
    js = nc.jetstream()
    key = "group.metric.cpu_pace"

    async def hot(host: str) -> float:
        ts = time.time()
        await js.publish(subjects.metrics(host), encode(frame(host, ts, 1, cpu=99)))
        return ts

    try:
        await a1.api.put("notifier", tg(bot))
        await a1.api.put("rule", Rule(name="cpu_pace", field="cpu.percent", threshold=90))
        await eventually(
            lambda: all(
                any(cr.rule.name == "cpu_pace" for cr in x.engine.metric) and x.notifier("tg").base_url == bot.url
                for x in live
            ),
            10,
        )

        p1 = await hot(h1)
        await eventually(lambda: len(bot.messages) >= 1, 10)
        assert bot.received_at[0] < p1 + gi / 2 and h1 in bot.texts()[0]
        await asyncio.sleep(0.8)
        await hot(h2)
        await asyncio.sleep(0.3)
        await hot(h3)
        await eventually(lambda: len(bot.messages) >= 2, gi + 10)
        await asyncio.sleep(0.5)
        texts = bot.texts()
        assert len(texts) == 2, texts  # not one per instance, not one per alert
        assert bot.received_at[1] >= p1 + gi
        assert h2 in texts[1] and h3 in texts[1] and h1 not in texts[1]

        # Replace an instance while the group's interval runs: the newcomer reads the flush
        # from KV and holds its alert until the interval is over.
        opened = a2.state.group(key).opened
        await stop_alerter(a1)
        live.remove(a1)
        a3 = await start_alerter(nats_stack, **settings)
        live.append(a3)
        assert a3.state.group(key).opened == opened
        await eventually(lambda: any(cr.rule.name == "cpu_pace" for cr in a3.engine.metric), 10)
        p4 = await hot(h4)
        assert p4 < opened + gi, "the restart took longer than the interval; nothing left to hold"
        await eventually(lambda: len(bot.messages) >= 3, gi + 10)
        await asyncio.sleep(1.0)
        texts = bot.texts()
        assert len(texts) == 3, texts
        assert bot.received_at[2] >= opened + gi and h4 in texts[2]
    finally:
        for x in live:
            await stop_alerter(x)
