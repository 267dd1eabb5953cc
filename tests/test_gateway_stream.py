"""Live stream over SSE and WebSocket against the real gateway and NATS: filters, replay with
Last-Event-ID, heartbeats, the connection cap, and a slow reader dropped while others go on."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from libs.runtime import connect
from libs.schemas import Codec, MetricFrame, ProcessSnapshot
from libs.schemas import subjects as s
from libs.schemas.metrics import CpuStats, MemStats, ProcInfo
from tests.support.gateway import create_database, drop_database, running_gateway, sse_events

pytestmark = pytest.mark.timeout(240)

QUEUE = 32
frame_codec = Codec(MetricFrame)
snap_codec = Codec(ProcessSnapshot)


def frame(host: str, seq: int, cpu: float = 10.0) -> MetricFrame:
    return MetricFrame(
        host=host,
        ts=time.time(),
        boot=7,
        seq=seq,
        cpu=CpuStats(percent=cpu, count=2),
        mem=MemStats(total=100, available=60, used=40, percent=40.0),
    )


def big_snapshot(host: str, seq: int) -> ProcessSnapshot:
    procs = [
        ProcInfo(
            pid=i + 1, name=f"worker-{i}", cmdline="/usr/bin/python3 -m service --flag " + "x" * 220, cpu_percent=1.0
        )
        for i in range(500)
    ]
    return ProcessSnapshot(host=host, ts=time.time(), seq=seq, total=900, procs=procs)


@pytest.fixture(scope="module")
async def stream_db(pg_cluster):
    dsn = await create_database(pg_cluster.dsn, "gwstream")
    yield dsn
    await drop_database(pg_cluster.dsn, dsn)


@pytest.fixture(scope="module")
def gw(nats_stack, stream_db, workdir):
    with running_gateway(
        nats_stack,
        stream_db,
        workdir / "gw-stream",
        stream_queue_size=str(QUEUE),
        stream_max_clients="4",
        stream_heartbeat_s="0.5",
        stream_buffer_size="100",
    ) as g:
        g.token("viewer")
        yield g


@pytest.fixture
async def pub(nats_stack):
    nc = await connect(nats_stack.settings("admin"), "test-stream-pub", retry_forever=False)
    yield nc
    await nc.close()


async def collect(
    gw, query: str, n: int, timeout: float = 15, headers: dict | None = None, started: asyncio.Event | None = None
) -> list:
    out = []
    async with gw.async_client("viewer", timeout=None) as c:
        async with c.stream("GET", "/api/v1/stream" + query, headers=headers or {}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            if started:
                started.set()

            async def read():
                async for ev in sse_events(r):
                    out.append(ev)
                    if len(out) >= n:
                        return

            await asyncio.wait_for(read(), timeout)
    return out


async def wait_clients(gw, n: int, timeout: float = 10) -> None:
    async with gw.async_client("viewer") as c:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = (await c.get("/metrics")).text
            if f"fleetwatch_gateway_stream_clients {n}\n" in m:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"never {n} stream clients")


async def test_sse_frames_filtered_by_host_and_summarised(gw, pub):
    started = asyncio.Event()
    task = asyncio.create_task(collect(gw, "?hosts=host-a&kinds=frame", 3, started=started))
    await asyncio.wait_for(started.wait(), 10)
    await wait_clients(gw, 1)
    for i in range(3):
        await pub.publish(s.metrics("host-b"), frame_codec.encode(frame("host-b", i)))
        await pub.publish(s.metrics("host-a"), frame_codec.encode(frame("host-a", i, cpu=50.0 + i)))
    await pub.flush()
    evs = await task
    assert [e.event for e in evs] == ["frame"] * 3
    data = [e.json() for e in evs]
    assert [d["host"] for d in data] == ["host-a"] * 3
    assert [d["data"]["cpu_percent"] for d in data] == [50.0, 51.0, 52.0]
    assert "per_core" not in evs[0].data  # a summary, not the whole frame
    ids = [int(e.id) for e in evs]
    assert ids == sorted(ids) and len(set(ids)) == 3


async def test_last_event_id_replays_what_was_missed(gw, pub):
    started = asyncio.Event()
    task = asyncio.create_task(collect(gw, "?hosts=host-c", 2, started=started))
    await asyncio.wait_for(started.wait(), 10)
    await wait_clients(gw, 1)
    for i in range(2):
        await pub.publish(s.metrics("host-c"), frame_codec.encode(frame("host-c", i)))
    await pub.flush()
    first = await task
    await wait_clients(gw, 0)
    for i in range(2, 5):  # published while the client is away
        await pub.publish(s.metrics("host-c"), frame_codec.encode(frame("host-c", i)))
    await pub.flush()
    await asyncio.sleep(0.5)
    again = await collect(gw, "?hosts=host-c", 3, headers={"Last-Event-ID": first[-1].id})
    assert [e.json()["data"]["seq"] for e in again] == [2, 3, 4]
    # An id this gateway never issued (another replica's, or from before a restart): a `gap`
    # event tells the client to reload, then live events follow.
    gap = await collect(gw, "?hosts=host-c", 1, headers={"Last-Event-ID": "99999999"}, timeout=10)
    assert gap[0].event == "gap" and gap[0].json()["data"]["last_event_id"] == 99999999


async def test_heartbeat_when_nothing_happens(gw):
    async with gw.async_client("viewer", timeout=None) as c:
        async with c.stream("GET", "/api/v1/stream?hosts=nobody") as r:

            async def first_comment():
                async for ev in sse_events(r, comments=True):
                    if ev.comment == "heartbeat":
                        return True

            t0 = time.monotonic()
            assert await asyncio.wait_for(first_comment(), 10)
            assert time.monotonic() - t0 >= 0.3


async def test_websocket_carries_the_same_events(gw, pub):
    url = (
        gw.url.replace("http://", "ws://")
        + f"/api/v1/ws?hosts=host-b&kinds=frame,app&access_token={gw.token('viewer')}"
    )
    async with ws_connect(url, open_timeout=10) as ws:
        await wait_clients(gw, 1)
        await pub.publish(s.metrics("host-a"), frame_codec.encode(frame("host-a", 1)))
        await pub.publish(s.metrics("host-b"), frame_codec.encode(frame("host-b", 42, cpu=77.0)))
        await pub.flush()
        got = []
        while len(got) < 1:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg["kind"] != "heartbeat":
                got.append(msg)
        assert got[0]["kind"] == "frame" and got[0]["host"] == "host-b" and got[0]["data"]["cpu_percent"] == 77.0
        hb = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hb == {"kind": "heartbeat"}


async def test_bad_filter_is_400(gw):
    async with gw.async_client("viewer") as c:
        r = await c.get("/api/v1/stream?kinds=frames,bogus")
        assert r.status_code == 400 and "bogus" in r.text


async def test_connection_cap_answers_503(gw):
    async with gw.async_client("viewer", timeout=None) as c:
        streams = [c.stream("GET", "/api/v1/stream?hosts=nobody") for _ in range(4)]
        opened = [await st.__aenter__() for st in streams]
        try:
            assert all(r.status_code == 200 for r in opened)
            r = await c.get("/api/v1/stream")
            assert r.status_code == 503 and "too many" in r.text and r.headers["retry-after"]
            url = gw.url.replace("http://", "ws://") + f"/api/v1/ws?access_token={gw.token('viewer')}"
            with pytest.raises(InvalidStatus) as ei:
                async with ws_connect(url, open_timeout=10):
                    pass
            assert ei.value.response.status_code == 503
        finally:
            for st in streams:
                await st.__aexit__(None, None, None)
    await wait_clients(gw, 0)
    m = (await gw.async_client("viewer").get("/metrics")).text
    assert "fleetwatch_gateway_stream_rejected_total 2" in m


async def test_slow_client_is_dropped_while_others_keep_receiving(gw, pub):
    host, port = gw.url.removeprefix("http://").split(":")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((host, int(port)))
    slow.sendall(
        f"GET /api/v1/stream?kinds=procs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.token('viewer')}\r\n\r\n".encode()
    )
    head = slow.recv(256)
    assert head.startswith(b"HTTP/1.1 200"), head
    # From here on the slow client reads nothing.
    n = 120
    started = asyncio.Event()
    fast = asyncio.create_task(collect(gw, "?kinds=procs", n, timeout=120, started=started))
    await asyncio.wait_for(started.wait(), 10)
    await wait_clients(gw, 2)
    for i in range(n):
        await pub.publish(s.procs("host-a"), snap_codec.encode(big_snapshot("host-a", i)))
        await pub.flush()
        await asyncio.sleep(0.02)
    evs = await fast
    assert [e.json()["data"]["seq"] for e in evs] == list(range(n))  # every one, in order
    async with gw.async_client("viewer") as c:
        m = (await c.get("/metrics")).text
    assert "fleetwatch_gateway_stream_dropped_total 1\n" in m
    # The server closed the slow connection: draining it ends in EOF, well short of all events.
    slow.settimeout(10)
    total = 0
    try:
        while chunk := slow.recv(1 << 20):
            total += len(chunk)
    except (TimeoutError, ConnectionResetError) as exc:
        assert isinstance(exc, ConnectionResetError), "slow connection still open"
    finally:
        slow.close()
    assert total < sum(len(snap_codec.encode(big_snapshot("host-a", 0))) for _ in range(n)) * 0.8
    await wait_clients(gw, 0)
