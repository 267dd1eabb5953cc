"""Benchmark: host down → notification delivered, end to end, beside Prometheus + Alertmanager.

Real nats-server (own, with fleetwatch's auth), the alerter with its production defaults
(tick 0.25 s, group_wait 0.5 s, built-in host_down rule: 3 missed intervals), a local server
speaking the Telegram Bot API. HOSTS simulated hosts publish a frame every INTERVAL (5 s, the
collector's default) and stop one after another; latency is from each host's last frame to the
message arriving at the Bot API server.

RESULT lines:
  detect_latency              mean seconds, last frame → Telegram message delivered
  detect_latency_max          worst of the trials
  detect_latency_overhead     mean seconds beyond the rule itself (3 × interval): the raw
                              floor measured in the same run is the rule's own wait
  detect_latency_vs_floor     detect_latency ÷ (3 × interval)
  detect_latency_prom_am      what Prometheus + Alertmanager take with default settings for the
                              same event (model, not measured here: scrape_interval 1 m → the
                              first failed scrape comes 30 s later on average and up==0 is written
                              after scrape_timeout 10 s; evaluation_interval 1 m → +30 s on average;
                              `for` 0; Alertmanager group_wait 30 s): 100 s mean, 160 s worst
  detect_latency_vs_prom_am   detect_latency ÷ that mean
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time

from libs.embedded.stack import NatsStack, make_private_dir
from libs.runtime import connect
from libs.runtime.jetstream import provision
from libs.schemas import encode, subjects
from services.alerter.config import AlerterConfig
from services.alerter.service import Alerter
from tests.support.alerting import BotApiServer, frame

INTERVAL = float(os.environ.get("BENCH_DETECT_INTERVAL", "5"))
HOSTS = int(os.environ.get("BENCH_DETECT_HOSTS", "4"))
PROM_MEAN = 30 + 10 + 30 + 30
PROM_WORST = 60 + 10 + 60 + 30
TOKEN = "100:bench-token"


def result(name: str, value: float, unit: str) -> None:
    print(f"RESULT {name} {value:.4g} {unit}", flush=True)


async def run(stack: NatsStack) -> list[float]:
    admin = await connect(stack.settings("admin"), "bench-admin", retry_forever=False)
    await provision(admin)
    bot = BotApiServer(TOKEN).start()
    nc = await connect(stack.settings("alerter"), "alerter", retry_forever=False)
    # Each host's alert is measured as the first of its group, as the Prometheus + Alertmanager
    # model is (group_wait, not group_interval): hosts stopping 5 s apart would otherwise wait
    # for the host_down group's interval, which measures pacing, not detection.
    cfg = AlerterConfig(
        telegram_bot_token=TOKEN, telegram_chat_id="1", telegram_base_url=bot.url, lookback_s=0, group_interval_s=0
    )
    a = Alerter(cfg, nc)
    await a.start()
    js = admin.jetstream()
    hosts = [f"bench-{i}" for i in range(HOSTS)]
    last: dict[str, float] = {}
    alive = set(hosts)
    try:
        seq = 0
        # Every host reports for a while; then one stops after each round.
        for rnd in range(2 + HOSTS):
            for h in sorted(alive):
                seq += 1
                now = time.time()
                await js.publish(subjects.metrics(h), encode(frame(h, now, seq, interval=INTERVAL)))
                last[h] = now
            if rnd >= 2:
                alive.discard(hosts[rnd - 2])
            await asyncio.sleep(INTERVAL)
        delivered: dict[str, float] = {}
        deadline = time.time() + 4 * INTERVAL + 10
        while len(delivered) < HOSTS and time.time() < deadline:
            for i, text in enumerate(bot.texts()):
                for h in hosts:
                    if h not in delivered and f"host {h}" in text and "FIRING" in text:
                        delivered[h] = bot.received_at[i]
            await asyncio.sleep(0.02)
        missing = [h for h in hosts if h not in delivered]
        if missing:
            raise SystemExit(f"no host-down notification for {missing}")
        return [delivered[h] - last[h] for h in hosts]
    finally:
        await a.stop()
        await nc.close()
        await admin.close()
        bot.stop()


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    d = make_private_dir(prefix="fleetwatch-bench-detect-")
    stack = NatsStack(d, []).start()
    try:
        lat = asyncio.run(run(stack))
    finally:
        stack.stop()
        shutil.rmtree(d, ignore_errors=True)
    mean = sum(lat) / len(lat)
    floor = 3 * INTERVAL
    result("detect_latency", mean, "s")
    result("detect_latency_max", max(lat), "s")
    result("detect_latency_overhead", mean - floor, "s")
    result("detect_latency_vs_floor", mean / floor, "ratio")
    result("detect_latency_prom_am", PROM_MEAN, "s")
    result("detect_latency_prom_am_worst", PROM_WORST, "s")
    result("detect_latency_vs_prom_am", mean / PROM_MEAN, "ratio")
    result("detect_latency_interval", INTERVAL, "s")


if __name__ == "__main__":
    main()
