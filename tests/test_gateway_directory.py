"""The gateway's host directory on its own (no servers): the encoded /hosts body is reused while
nothing changed, rebuilt when a frame arrives or a host goes offline, and built without holding
the event loop for a whole large fleet."""

from __future__ import annotations

import asyncio
import gzip
import json

from fleetwatch.simulate import Simulator
from libs.schemas import Codec, MetricFrame
from services.gateway.directory import BUILD_SLICE, Directory
from services.gateway.summary import frame_summary


def fleet(n: int, offline_after_s: float = 30.0) -> tuple[Directory, Simulator]:
    sim = Simulator(n, seed=4)
    d = Directory(offline_after_s)
    for h in sim.host_ids:
        d.info(sim.info(h))
        d.frame(sim.frame(h))
    return d, sim


async def test_body_reused_until_something_changes():
    d, sim = fleet(3)
    d.max_age_s = 0.0  # no grace period: only the directory's state decides
    first = await d.list_body(None, None, False)
    assert await d.list_body(None, None, False) is first  # nothing changed: the same bytes, no rebuild
    h = sim.host_ids[1]
    d.frame(sim.frame(h))
    second = await d.list_body(None, None, False)
    assert second is not first
    by_host = {v["host"]: v for v in json.loads(second)}
    assert by_host[h]["last"]["seq"] == 2 and all(v["status"] == "online" for v in by_host.values())
    # The compressed body is the same document.
    assert json.loads(gzip.decompress(await d.list_body(None, None, True))) == json.loads(second)


async def test_a_host_going_offline_rebuilds_the_body_without_any_new_message():
    d, sim = fleet(2, offline_after_s=0.3)
    d.max_age_s = 0.0
    assert {v["status"] for v in json.loads(await d.list_body(None, None, False))} == {"online"}
    await asyncio.sleep(0.4)
    views = json.loads(await d.list_body(None, None, False))
    assert {v["status"] for v in views} == {"offline"}
    assert json.loads(await d.list_body("online", None, False)) == []


async def test_stale_body_served_within_max_age():
    d, sim = fleet(2)
    d.max_age_s = 60.0
    first = await d.list_body(None, None, False)
    d.frame(sim.frame(sim.host_ids[0]))
    assert await d.list_body(None, None, False) is first  # at most max_age_s old by design


async def test_body_current_until_a_burst_is_served_while_the_rebuild_runs():
    d, sim = fleet(2)
    d.max_age_s = 0.05
    first = await d.list_body(None, None, False)
    await asyncio.sleep(6 * d.max_age_s)  # built long ago, but nothing changed since
    assert await d.list_body(None, None, False) is first  # current: seen so now
    d.frame(sim.frame(sim.host_ids[0]))
    # Changed a moment ago: the old body at once (no waiting on a build), a rebuild under way.
    assert await d.list_body(None, None, False) is first
    await asyncio.sleep(0.01)
    assert await d.list_body(None, None, False) is not first
    # Not seen current for longer than 5 x max_age: a request waits for the rebuild instead.
    second = await d.list_body(None, None, False)
    d.frame(sim.frame(sim.host_ids[1]))
    await asyncio.sleep(6 * d.max_age_s)
    assert await d.list_body(None, None, False) is not second


async def test_large_fleet_built_in_slices():
    d, _ = fleet(BUILD_SLICE * 3)
    ticks = 0
    stop = False

    async def ticker() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    ticks = 0
    body = await d.list_body(None, None, False)
    stop = True
    await t
    assert len(json.loads(body)) == BUILD_SLICE * 3
    assert ticks >= 2  # other tasks ran while the body was being built


def test_latest_frame_kept_as_bytes_and_decoded_on_request():
    sim = Simulator(1, seed=4)
    d = Directory(30.0)
    h = sim.host_ids[0]
    old, new = sim.frame(h, ts=1000.0), sim.frame(h, ts=1005.0)
    raw = Codec(MetricFrame).encode(new)
    d.frame(new, raw=raw)
    d.frame(old)  # late: the newer frame stays
    e = d.hosts[h]
    assert e.raw is raw and e.frame == new and e.frame is not e.frame  # decoded anew, nothing decoded kept
    assert e.disks == tuple((x.mount, x.percent) for x in new.disks) and e.disks
    assert e.summary == frame_summary(new) and d.view(h).last["ts"] == 1005.0
