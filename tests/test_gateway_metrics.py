"""The gateway's own /metrics against the real gateway process: the request-duration histogram
(route template, method, status; cumulative buckets; counts agree with the request counter) and
the event loop lag it measures of itself."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from itertools import pairwise

import pytest

from tests.support.gateway import create_database, drop_database, running_gateway

pytestmark = pytest.mark.timeout(180)

SAMPLE_TIMEOUT_S = 0.3
HIST = "fleetwatch_http_request_duration_seconds"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample line by (name, labels), checked against the text format as it is parsed."""
    out: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)', line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        key = (m.group(1), labels)
        assert key not in out, f"duplicate series {line!r}"
        out[key] = float(m.group(3))
    return out


def histogram(s: dict, name: str, **labels: str) -> tuple[list[tuple[float, float]], float, float]:
    """(sorted (le, cumulative count) pairs, _count, _sum) of one series of histogram `name`."""
    want = frozenset(labels.items())
    buckets = []
    for (n, k), v in s.items():
        d = dict(k)
        le = d.pop("le", None)
        if n == f"{name}_bucket" and d == labels:
            buckets.append((float(le), v))
    return sorted(buckets), s[(f"{name}_count", want)], s[(f"{name}_sum", want)]


def assert_well_formed(buckets: list[tuple[float, float]], count: float) -> None:
    assert buckets and buckets[-1][0] == float("inf") and buckets[-1][1] == count
    assert all(a[1] <= b[1] for a, b in pairwise(buckets)), f"buckets not cumulative: {buckets}"


@pytest.fixture(scope="module")
async def metrics_db(pg_cluster):
    dsn = await create_database(pg_cluster.dsn, "gwmetrics")
    yield dsn
    await drop_database(pg_cluster.dsn, dsn)


@pytest.fixture(scope="module")
def gw(nats_stack, metrics_db, workdir):
    with running_gateway(
        nats_stack,
        metrics_db,
        workdir / "gw-metrics",
        sample_timeout_s=str(SAMPLE_TIMEOUT_S),
        loop_lag_interval_s="0.02",
    ) as g:
        yield g


async def test_request_duration_histogram_by_route_template_method_and_status(gw):
    async with gw.async_client("viewer") as c:
        for _ in range(3):
            assert (await c.get("/api/v1/hosts")).status_code == 200
        for name in ("no-such-host-a", "no-such-host-b"):
            assert (await c.get(f"/api/v1/hosts/{name}")).status_code == 404
        assert (await c.get("/api/v1/users")).status_code == 403  # viewer below admin
        text = (await c.get("/metrics")).text
    s = samples(text)
    assert f"# TYPE {HIST} histogram" in text
    # The route is the template: the names asked for never become label values.
    assert "no-such-host" not in text

    buckets, count, total = histogram(s, HIST, method="GET", route="/api/v1/hosts", status="200")
    assert count >= 3 and total > 0
    assert_well_formed(buckets, count)
    assert (
        s[
            (
                "fleetwatch_gateway_requests_total",
                frozenset({("method", "GET"), ("route", "/api/v1/hosts"), ("status", "200")}),
            )
        ]
        == count
    )

    buckets, count, _ = histogram(s, HIST, method="GET", route="/api/v1/hosts/{host}", status="404")
    assert count == 2
    assert_well_formed(buckets, count)
    buckets, count, _ = histogram(s, HIST, method="GET", route="/api/v1/users", status="403")
    assert count == 1


async def test_slow_answer_lands_in_its_bucket(gw, nats_stack):
    # A host the directory knows (host info on its live subject) whose collector gets the request
    # and never answers.
    from libs.runtime import connect
    from libs.schemas import Codec, HostInfo
    from libs.schemas import subjects as s

    nc = await connect(nats_stack.settings("admin"), "test-metrics", retry_forever=False)
    try:
        info = HostInfo(host="metrics-quiet", ts=1.0, hostname="quiet")
        await nc.subscribe(s.sample(info.host))
        await nc.flush()
        async with gw.async_client("viewer") as c:
            for _ in range(100):  # bounded: 10 s
                await nc.publish(s.hosts(info.host), Codec(HostInfo).encode(info))
                await nc.flush()
                if (await c.get(f"/api/v1/hosts/{info.host}")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the gateway never learnt of the host")
            r = await c.get(f"/api/v1/hosts/{info.host}/sample")
            assert r.status_code == 504, r.text
            text = (await c.get("/metrics")).text
    finally:
        await nc.close()
    buckets, count, total = histogram(
        samples(text), HIST, method="GET", route="/api/v1/hosts/{host}/sample", status="504"
    )
    assert count == 1 and total >= SAMPLE_TIMEOUT_S * 0.9
    assert_well_formed(buckets, count)
    le = dict(buckets)
    assert le[0.25] == 0 and le[float("inf")] == 1, buckets  # waited the timeout: above 0.25 s


async def test_event_loop_lag_sees_a_stalled_gateway(gw):
    async with gw.async_client("viewer") as c:
        before = samples((await c.get("/metrics")).text)
        assert before[("fleetwatch_event_loop_lag_seconds_count", frozenset())] > 0  # the monitor runs
        assert before[("fleetwatch_event_loop_cpu_wait_seconds_total", frozenset())] >= 0
        # The whole process stopped for 0.6 s: its loop wakes at least that late.
        os.kill(gw.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(0.6)
        finally:
            os.kill(gw.proc.pid, signal.SIGCONT)
        after = samples((await c.get("/metrics")).text)
    assert after[("fleetwatch_event_loop_lag_max_seconds", frozenset())] >= 0.5
    buckets, count, _ = histogram(after, "fleetwatch_event_loop_lag_seconds")
    assert_well_formed(buckets, count)
    le_before = dict(histogram(before, "fleetwatch_event_loop_lag_seconds")[0])
    le = dict(buckets)
    # One new sample above 0.25 s.
    assert (le[float("inf")] - le[0.25]) - (le_before[float("inf")] - le_before[0.25]) >= 1
    # A stopped process does not wait for a CPU: the lag is not put down to the machine.
    busy = dict(histogram(after, "fleetwatch_event_loop_busy_lag_seconds")[0])
    assert busy[float("inf")] - busy[0.25] >= 1
    assert (
        after[("fleetwatch_event_loop_cpu_wait_seconds_total", frozenset())]
        >= before[("fleetwatch_event_loop_cpu_wait_seconds_total", frozenset())]
    )
