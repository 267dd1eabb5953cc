"""The collector keeps sampling while NATS is away and backfills the gap, in order."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise

import pytest

from libs.runtime import connect
from libs.runtime.jetstream import provision
from libs.schemas import Codec, MetricFrame
from tests.support.pipeline import start_collector, wait_until

HOST = "local"
FRAME = Codec(MetricFrame)


async def _frames(admin) -> list[MetricFrame]:
    """Every frame of HOST in the stream, in stream order."""
    js = admin.jetstream()
    sub = await js.pull_subscribe(f"fleet.metrics.{HOST}", stream="METRICS")  # ephemeral
    out: list[MetricFrame] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1)
            except Exception:
                break
            for m in msgs:
                out.append(FRAME.decode(m.data))
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out


@pytest.mark.slow
async def test_nats_stopped_30s_gap_frames_arrive_after_restart_in_order(fresh_nats, workdir):
    admin = await connect(fresh_nats.settings("admin"), "test-gap", retry_forever=False)
    await provision(admin)
    coll = start_collector(
        fresh_nats,
        HOST,
        workdir / "collector-gap.log",
        FLEETWATCH_COLLECTOR_INTERVAL="1",
        FLEETWATCH_COLLECTOR_PROCS_INTERVAL="3600",
    )
    try:

        async def stored() -> int:
            info = await admin.jetstream().stream_info("METRICS", subjects_filter=f"fleet.metrics.{HOST}")
            return (info.state.subjects or {}).get(f"fleet.metrics.{HOST}", 0)

        await wait_until(lambda: _ge(stored, 3), 30, what="first frames")
        fresh_nats.stop()
        down_at = time.time()
        await asyncio.sleep(30)
        up_at = time.time()
        fresh_nats.server.start()
        for _ in range(100):
            if admin.is_connected:
                break
            await asyncio.sleep(0.1)
        await wait_until(lambda: _has_frame_after(admin, up_at + 2), 60, what="frames after the restart")
        frames = await _frames(admin)
    finally:
        coll.stop()
        await admin.close()

    seqs = [f.seq for f in frames]
    # Every frame of the run, each once, in the order taken: nothing lost across the outage.
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert len({f.boot for f in frames}) == 1
    assert all(a.ts < b.ts for a, b in pairwise(frames))
    gap = [f for f in frames if down_at + 0.5 < f.ts < up_at - 0.5]
    assert len(gap) >= 20, f"only {len(gap)} frames from the 30 s outage"
    assert all(f.ts - g.ts < 3 for g, f in pairwise(gap)), "sampling stalled during the outage"


async def _ge(fn, n):
    return (await fn()) >= n


async def _has_frame_after(admin, t: float) -> bool:
    try:
        msg = await admin.jetstream().get_last_msg("METRICS", f"fleet.metrics.{HOST}")
    except Exception:
        return False
    return FRAME.decode(msg.data).ts > t
