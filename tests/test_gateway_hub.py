"""The live-event hub on its own (no servers): grouping, batching, bounded queues, replay."""

from __future__ import annotations

import asyncio

from services.gateway.hub import Hub, HubFull


def ids(client) -> list[int]:
    return [ev.id for batch in client.take() for ev in batch.events]


async def test_clients_with_the_same_filter_share_one_group_and_one_batch():
    hub = Hub(max_clients=10, queue_size=100, buffer_size=100, heartbeat_s=15, batch_s=0.01)
    a = hub.add(["h1"], ["frame"])
    b = hub.add(["h1"], ["frame"])
    other = hub.add(["h2"], ["frame"])
    assert len(hub.groups) == 2
    hub.publish("frame", "h1", {}, 0.0)
    hub.publish("frame", "h2", {}, 0.0)
    hub.publish("app", "h1", {}, 0.0)  # a kind nobody asked for
    assert not a.pending  # batched: nothing until the next flush
    hub._flush()
    assert a.pending[0] is b.pending[0]  # one batch object, bytes joined once for both
    assert ids(a) == [1] and ids(b) == [1] and ids(other) == [2]
    hub.remove(a)
    hub.remove(b)
    assert len(hub.groups) == 1


async def test_a_client_over_its_bound_is_dropped_the_others_are_not():
    hub = Hub(max_clients=10, queue_size=5, buffer_size=100, heartbeat_s=15)
    slow, fast = hub.add(None, ["frame"]), hub.add(None, ["frame"])
    for i in range(12):
        hub.publish("frame", "h", {"i": i}, 0.0)
        if i % 3 == 0:
            ids(fast)  # keeps reading
    assert slow.dropped.is_set() and not fast.dropped.is_set() and hub.dropped == 1


async def test_replay_after_last_event_id_without_duplicates_and_gap_for_unknown_ids():
    hub = Hub(max_clients=10, queue_size=100, buffer_size=5, heartbeat_s=15, batch_s=0.01)
    hub.add(None, ["frame"])  # a live group with events waiting for the next flush
    for i in range(8):
        hub.publish("frame", "h", {"i": i}, 0.0)
    c = hub.add(None, ["frame"], last_event_id=5)
    hub._flush()
    assert ids(c) == [6, 7, 8]  # from the buffer or the group's batch, each once
    lost = hub.add(["h"], ["frame"], last_event_id=1)  # older than the 5-event buffer
    got = [ev for batch in lost.take() for ev in batch.events]
    assert got[0].kind == "gap" and [e.id for e in got[1:]] == [4, 5, 6, 7, 8]


async def test_connection_cap():
    hub = Hub(max_clients=2, queue_size=10, buffer_size=10, heartbeat_s=15)
    hub.add(None, None)
    hub.add(None, None)
    try:
        hub.add(None, None)
        raise AssertionError("the third client was accepted")
    except HubFull:
        assert hub.rejected == 1


async def test_ticker_wakes_clients_in_batches():
    hub = Hub(max_clients=2, queue_size=100, buffer_size=10, heartbeat_s=15, batch_s=0.02)
    hub._ticker = asyncio.ensure_future(hub._tick())
    try:
        c = hub.add(None, ["frame"])
        for _ in range(3):
            hub.publish("frame", "h", {}, 0.0)
        assert await asyncio.wait_for(c.next(), 2) is True
        assert len(c.pending) == 1 and ids(c) == [1, 2, 3]
    finally:
        await hub.stop()


async def test_ticker_marks_heartbeats_for_idle_clients_only():
    hub = Hub(max_clients=3, queue_size=100, buffer_size=10, heartbeat_s=0.2, batch_s=0.02)
    hub._ticker = asyncio.ensure_future(hub._tick())
    try:
        idle = hub.add(None, ["app"])
        busy = hub.add(None, ["frame"])

        async def keep_busy() -> None:
            for _ in range(40):
                hub.publish("frame", "h", {}, 0.0)
                await asyncio.sleep(0.02)

        feeder = asyncio.ensure_future(keep_busy())
        assert await asyncio.wait_for(idle.next(), 2) is False  # a heartbeat, nothing pending
        beats = 0
        while not feeder.done():
            if await asyncio.wait_for(busy.next(), 2):
                busy.take()
            else:
                beats += 1
        assert beats == 0  # events kept going out: no heartbeat needed
    finally:
        await hub.stop()
