"""The Prometheus query API and federation against real clients: promtool, and a real Prometheus
2.42 scraping /prometheus/federate while frames are written. Every query's expected answer is
computed here from the frames written; fleetwatch's query_range and Prometheus's must both equal it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import time

import asyncpg
import httpx
import pytest

from tests.support.gateway import apply_ingest_schema, create_database, drop_database, running_gateway
from tests.support.prometheus import have, promtool, start_prometheus

pytestmark = pytest.mark.skipif(not have("prometheus") or not have("promtool"), reason="needs Debian's prometheus")

HOSTS = {"h1": "a", "h2": "a", "h3": "b"}  # host -> rack label
FRAMES = 26  # one every SPACING seconds, per host
SPACING = 2
RESET_AT = 15  # h2's uptime counter restarts at this frame


def cpu(hi: int, k: int) -> float:
    return 10 * hi + (k * 7 % 13) + 0.5


def load1(hi: int, k: int) -> float:
    return hi + 0.25 * (k % 5)  # float32-exact: the columns are real


def mem(hi: int, k: int) -> float:
    return 40 + hi * 3 + (k % 3)


def uptime(host: str, hi: int, k: int) -> float:
    if host == "h2" and k >= RESET_AT:
        return 3.0 * (k - RESET_AT) + 1
    return 100.0 * hi + 3.0 * k


def disk(hi: int, k: int, mount: str) -> float:
    return 20 * hi + (k % 4) + 0.25 if mount == "/" else 40 + 10 * (k % 3) + hi


class Data:
    """What was written: series (labels) -> [(t, v)], the reference every answer is held to."""

    def __init__(self, t0: int) -> None:
        self.t0 = t0
        self.series: dict[tuple, list[tuple[float, float]]] = {}

    def add(self, labels: dict[str, str], t: float, v: float) -> None:
        self.series.setdefault(tuple(sorted(labels.items())), []).append((t, v))

    def of(self, name: str, **match: str):
        for key, pts in self.series.items():
            labels = dict(key)
            if labels["__name__"] == name and all(labels.get(k) == v for k, v in match.items()):
                yield labels, pts


def at(pts, t):
    got = [v for ts, v in pts if t - 300 <= ts <= t]
    return got[-1] if got else None


def win(pts, t, r):
    return [(ts, v) for ts, v in pts if t - r <= ts <= t]


def nameless(labels):
    return {k: v for k, v in labels.items() if k != "__name__"}


def increase(pts):
    """Windows here start and end on a sample, so Prometheus extrapolates nothing: the rise,
    counting a reset's earlier value."""
    total, last = pts[-1][1] - pts[0][1], pts[0][1]
    for _, v in pts:
        if v < last:
            total += last
        last = v
    return total


def per_series(d: Data, name: str, fn, keep_name=False, **match):
    def expected(t):
        out = {}
        for labels, pts in d.of(name, **match):
            v = fn(pts, t)
            if v is not None:
                out[frozenset((labels if keep_name else nameless(labels)).items())] = v
        return out

    return expected


def grouped(d: Data, name: str, by: tuple[str, ...], agg, without=False):
    def expected(t):
        groups: dict[frozenset, list[float]] = {}
        for labels, pts in d.of(name):
            v = at(pts, t)
            if v is None:
                continue
            key = (
                {k: x for k, x in labels.items() if (k not in by and k != "__name__") if without}
                if without
                else {k: labels[k] for k in by if k in labels}
            )
            groups.setdefault(frozenset(key.items()), []).append(v)
        return {k: agg(vs) for k, vs in groups.items()}

    return expected


def topk_by(d: Data, name: str, k: int, by: str):
    def expected(t):
        groups: dict[str, list[tuple[float, dict]]] = {}
        for labels, pts in d.of(name):
            v = at(pts, t)
            if v is not None:
                groups.setdefault(labels[by], []).append((v, labels))
        return {frozenset(lab.items()): v for g in groups.values() for v, lab in sorted(g, key=lambda p: -p[0])[:k]}

    return expected


def queries(d: Data) -> dict[str, object]:
    last = lambda pts, t: at(pts, t)  # noqa: E731
    return {
        "fleetwatch_cpu_percent": per_series(d, "fleetwatch_cpu_percent", last, True),
        'fleetwatch_cpu_percent{host="h2"}': per_series(d, "fleetwatch_cpu_percent", last, True, host="h2"),
        'fleetwatch_cpu_percent{host!="h2"}': lambda t: {
            k: v
            for k, v in per_series(d, "fleetwatch_cpu_percent", last, True)(t).items()
            if ("host", "h2") not in k
        },
        'fleetwatch_load1{rack=~"a|c"}': per_series(d, "fleetwatch_load1", last, True, rack="a"),
        'fleetwatch_load1{host!~"h[12]"}': per_series(d, "fleetwatch_load1", last, True, host="h3"),
        "avg by (rack) (fleetwatch_cpu_percent)": grouped(d, "fleetwatch_cpu_percent", ("rack",), lambda v: sum(v) / len(v)),
        "sum without (host) (fleetwatch_load1)": grouped(d, "fleetwatch_load1", ("host",), math.fsum, without=True),
        "max(fleetwatch_cpu_percent)": grouped(d, "fleetwatch_cpu_percent", (), max),
        "min by (host) (fleetwatch_filesystem_used_percent)": grouped(d, "fleetwatch_filesystem_used_percent", ("host",), min),
        "count by (rack) (fleetwatch_filesystem_used_percent)": grouped(d, "fleetwatch_filesystem_used_percent", ("rack",), len),
        "topk(1, fleetwatch_filesystem_used_percent) by (host)": topk_by(d, "fleetwatch_filesystem_used_percent", 1, "host"),
        "avg_over_time(fleetwatch_cpu_percent[20s])": per_series(
            d, "fleetwatch_cpu_percent", lambda p, t: (lambda w: sum(v for _, v in w) / len(w))(win(p, t, 20))
        ),
        'max_over_time(fleetwatch_load1{host="h1"}[10s])': per_series(
            d, "fleetwatch_load1", lambda p, t: max(v for _, v in win(p, t, 10)), host="h1"
        ),
        "min_over_time(fleetwatch_memory_used_percent[20s])": per_series(
            d, "fleetwatch_memory_used_percent", lambda p, t: min(v for _, v in win(p, t, 20))
        ),
        "sum_over_time(fleetwatch_load1[6s])": per_series(d, "fleetwatch_load1", lambda p, t: sum(v for _, v in win(p, t, 6))),
        "count_over_time(fleetwatch_cpu_percent[20s])": per_series(d, "fleetwatch_cpu_percent", lambda p, t: len(win(p, t, 20))),
        "rate(fleetwatch_uptime_seconds_total[20s])": per_series(
            d, "fleetwatch_uptime_seconds_total", lambda p, t: increase(win(p, t, 20)) / 20
        ),
        "increase(fleetwatch_uptime_seconds_total[20s])": per_series(
            d, "fleetwatch_uptime_seconds_total", lambda p, t: increase(win(p, t, 20))
        ),
        "irate(fleetwatch_uptime_seconds_total[10s])": per_series(
            d,
            "fleetwatch_uptime_seconds_total",
            lambda p, t: (lambda w: (w[-1][1] if w[-1][1] < w[-2][1] else w[-1][1] - w[-2][1]) / (w[-1][0] - w[-2][0]))(win(p, t, 10)),
        ),
        "fleetwatch_cpu_percent * 2 + 1": per_series(d, "fleetwatch_cpu_percent", lambda p, t: at(p, t) * 2 + 1),
        "fleetwatch_cpu_percent > 25": lambda t: {
            k: v for k, v in per_series(d, "fleetwatch_cpu_percent", last, True)(t).items() if v > 25
        },
        "fleetwatch_load1 >= bool 2": per_series(d, "fleetwatch_load1", lambda p, t: float(at(p, t) >= 2)),
        "100 - fleetwatch_memory_used_percent": per_series(d, "fleetwatch_memory_used_percent", lambda p, t: 100 - at(p, t)),
        "sum by (rack) (rate(fleetwatch_uptime_seconds_total[20s]))": lambda t: _sum_by_rack(
            per_series(d, "fleetwatch_uptime_seconds_total", lambda p, tt: increase(win(p, tt, 20)) / 20)(t)
        ),
    }  # fmt: skip


def _sum_by_rack(per: dict) -> dict:
    out: dict[frozenset, float] = {}
    for k, v in per.items():
        rack = frozenset({("rack", dict(k)["rack"])})
        out[rack] = out.get(rack, 0.0) + v
    return out


def as_answer(result: list[dict]) -> dict[frozenset, dict[float, float]]:
    """A matrix as {labels: {t: v}}; the labels a scraping Prometheus adds are left out."""
    out = {}
    for s in result:
        labels = {k: v for k, v in s["metric"].items() if k not in ("job", "instance")}
        out[frozenset(labels.items())] = {float(t): float(v) for t, v in s["values"]}
    return out


def check(query: str, got: dict, expected_at, times: list[float], who: str) -> list[str]:
    want: dict[frozenset, dict[float, float]] = {}
    for t in times:
        for k, v in expected_at(t).items():
            want.setdefault(k, {})[t] = float(v)
    problems = []
    if set(got) != set(want):
        return [f"{who} {query}: series {sorted(map(sorted, got))} != {sorted(map(sorted, want))}"]
    for k, pts in want.items():
        if set(got[k]) != set(pts):
            problems.append(f"{who} {query} {sorted(k)}: times {sorted(got[k])} != {sorted(pts)}")
            continue
        bad = [(t, got[k][t], v) for t, v in pts.items() if not math.isclose(got[k][t], v, rel_tol=1e-9, abs_tol=1e-9)]
        if bad:
            problems.append(f"{who} {query} {sorted(k)}: (t, got, want) {bad[:3]}")
    return problems


async def write_frame(conn: asyncpg.Connection, d: Data, k: int) -> None:
    t = d.t0 + SPACING * k
    ts = dt.datetime.fromtimestamp(t, dt.UTC)
    for hi, (host, rack) in enumerate(HOSTS.items(), start=1):
        base = {"host": host, "rack": rack}
        await conn.execute(
            """INSERT INTO metrics (time, host, boot, seq, cpu_percent, cpu_count, mem_total, mem_available, mem_used,
                                    mem_percent, load1, uptime)
               VALUES ($1, $2, 1, $3, $4, 4, 1000, 500, 500, $5, $6, $7)""",
            ts, host, k, cpu(hi, k), mem(hi, k), load1(hi, k), uptime(host, hi, k),
        )  # fmt: skip
        d.add({"__name__": "fleetwatch_cpu_percent", **base}, t, cpu(hi, k))
        d.add({"__name__": "fleetwatch_memory_used_percent", **base}, t, mem(hi, k))
        d.add({"__name__": "fleetwatch_load1", **base}, t, load1(hi, k))
        d.add({"__name__": "fleetwatch_uptime_seconds_total", **base}, t, uptime(host, hi, k))
        for mount in ("/", "/data"):
            await conn.execute(
                "INSERT INTO metrics_disk (time, host, mount, total, used, free, percent) VALUES ($1, $2, $3, 100, 1, 99, $4)",
                ts, host, mount, disk(hi, k, mount),
            )  # fmt: skip
            d.add({"__name__": "fleetwatch_filesystem_used_percent", "mount": mount, **base}, t, disk(hi, k, mount))


@pytest.fixture(scope="module")
async def prom_db(pg_cluster):
    dsn = await create_database(pg_cluster.dsn, "gwprom")
    await apply_ingest_schema(dsn)
    conn = await asyncpg.connect(dsn)
    for host, rack in HOSTS.items():
        await conn.execute(
            "INSERT INTO hosts (host, labels) VALUES ($1, $2)", host, json.dumps({"rack": rack, "bad-key": "x"})
        )
    await conn.close()
    yield dsn
    await drop_database(pg_cluster.dsn, dsn)


@pytest.fixture(scope="module")
def gw(nats_stack, prom_db, workdir):
    with running_gateway(nats_stack, prom_db, workdir / "gw-prom") as g:
        yield g


@pytest.fixture(scope="module")
def api_token(gw):
    r = httpx.post(gw.url + "/api/v1/auth/tokens", json={"name": "grafana"}, headers=gw.headers("viewer"), timeout=30)
    r.raise_for_status()
    return r.json()["token"]


@pytest.fixture(scope="module")
async def scraped(gw, prom_db, api_token, workdir):
    """A real Prometheus scraping the federation endpoint every second (basic auth, the token as
    password) while FRAMES frames per host are written, one every SPACING s at their own time."""
    port = gw.url.rsplit(":", 1)[1]
    config = f"""
global: {{scrape_interval: 1s, scrape_timeout: 900ms}}
scrape_configs:
  - job_name: fleetwatch
    honor_labels: true
    metrics_path: /prometheus/federate
    params: {{"match[]": ['{{__name__=~"fleetwatch_.+"}}']}}
    basic_auth: {{username: grafana, password: "{api_token}"}}
    static_configs: [{{targets: ["127.0.0.1:{port}"]}}]
"""
    prom = start_prometheus(workdir / "prom-fed", config)
    try:
        async with httpx.AsyncClient(base_url=prom.url, timeout=30) as c:
            deadline = time.monotonic() + 30
            while (await c.get("/api/v1/query", params={"query": "up == 1"})).json()["data"]["result"] == []:
                assert time.monotonic() < deadline, (
                    "Prometheus never scraped the federation endpoint:\n" + prom.log()[-3000:]
                )
                await asyncio.sleep(0.3)
            conn = await asyncpg.connect(prom_db)
            t0 = (int(time.time()) // 2) * 2 + 2
            d = Data(t0)
            for k in range(FRAMES):
                await asyncio.sleep(max(0.0, d.t0 + SPACING * k - time.time()))
                await write_frame(conn, d, k)
            await conn.close()
            last = d.t0 + SPACING * (FRAMES - 1)
            # Every frame must have reached Prometheus: count them (a missed scrape fails here).
            deadline = time.monotonic() + 15
            while True:
                r = await c.get(
                    "/api/v1/query", params={"query": "count_over_time(fleetwatch_cpu_percent[5m])", "time": last}
                )
                counts = [float(s["value"][1]) for s in r.json()["data"]["result"]]
                if counts == [FRAMES] * len(HOSTS):
                    break
                assert time.monotonic() < deadline, f"Prometheus holds {counts} frames per host, not {FRAMES}"
                await asyncio.sleep(0.5)
        yield d, prom
    finally:
        prom.stop()


async def test_query_range_matches_the_frames_and_prometheus(gw, api_token, scraped):
    d, prom = scraped
    start, end, step = d.t0 + 24, d.t0 + SPACING * (FRAMES - 1), 4
    times = [float(t) for t in range(start, end + 1, step)]
    qs = queries(d)
    assert len(qs) >= 20
    problems = []
    async with httpx.AsyncClient(timeout=60) as c:
        for q, expected in qs.items():
            form = {"query": q, "start": str(start), "end": str(end), "step": f"{step}s"}
            # POST form, as Grafana and promtool send it; the Prometheus server gets the same.
            ours = await c.post(
                gw.url + "/prometheus/api/v1/query_range", data=form, headers={"Authorization": f"Bearer {api_token}"}
            )
            assert ours.status_code == 200, (q, ours.text)
            theirs = await c.post(prom.url + "/api/v1/query_range", data=form)
            assert theirs.status_code == 200, (q, theirs.text)
            problems += check(q, as_answer(ours.json()["data"]["result"]), expected, times, "fleetwatch")
            problems += check(q, as_answer(theirs.json()["data"]["result"]), expected, times, "prometheus")
        # Asked again (RFC 3339 times, GET), the same answer.
        q = "avg by (rack) (fleetwatch_cpu_percent)"
        iso = lambda t: dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")  # noqa: E731
        again = await c.get(
            gw.url + "/prometheus/api/v1/query_range",
            params={"query": q, "start": iso(start), "end": iso(end), "step": str(step)},
            headers={"Authorization": f"Bearer {api_token}"},
        )
        problems += check(q, as_answer(again.json()["data"]["result"]), qs[q], times, "fleetwatch (again)")
    assert not problems, "\n".join(problems)


async def test_promtool_instant_and_range(gw, api_token, scraped):
    d, _ = scraped
    t = d.t0 + SPACING * 20
    # promtool's instant query sends no headers of its own: basic auth from the URL, token as password.
    base = gw.url.replace("http://", f"http://grafana:{api_token}@") + "/prometheus"
    out = promtool("query", "instant", "-o", "json", "--time", str(t), base, 'fleetwatch_load1{host="h3"}')
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert [(s["metric"]["host"], float(s["value"][1])) for s in got] == [("h3", load1(3, 20))]
    out = promtool(
        "query", "range", "-o", "json", "--header", f"Authorization: Bearer {api_token}",
        "--start", str(d.t0 + 20), "--end", str(d.t0 + 40), "--step", "10s",
        gw.url + "/prometheus", "max by (rack) (fleetwatch_cpu_percent)",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = {s["metric"]["rack"]: [(float(t), float(v)) for t, v in s["values"]] for s in json.loads(out.stdout)}
    want_b = [(float(d.t0 + 10 * i), cpu(3, 5 * i)) for i in (2, 3, 4)]
    want_a = [(float(d.t0 + 10 * i), cpu(2, 5 * i)) for i in (2, 3, 4)]
    assert got == {"a": want_a, "b": want_b}
    # Without a token, or with a wrong one, promtool is refused.
    out = promtool("query", "instant", gw.url + "/prometheus", "fleetwatch_load1")
    assert out.returncode != 0 and "401" in out.stderr + out.stdout


async def test_metadata_series_labels_and_errors(gw, api_token, scraped):
    d, _ = scraped
    h = {"Authorization": f"Bearer {api_token}"}
    win_ = {"start": str(d.t0), "end": str(d.t0 + 60)}
    async with httpx.AsyncClient(base_url=gw.url + "/prometheus/api/v1", headers=h, timeout=30) as c:
        r = await c.get("/series", params={"match[]": 'fleetwatch_filesystem_used_percent{host="h1"}', **win_})
        assert r.status_code == 200, r.text
        assert sorted(s["mount"] for s in r.json()["data"]) == ["/", "/data"]
        assert all(s["rack"] == "a" and "bad-key" not in s for s in r.json()["data"])
        r = await c.get("/labels", params=win_)
        assert {"__name__", "host", "rack", "mount"} <= set(r.json()["data"])
        r = await c.get("/label/host/values", params=win_)
        assert r.json()["data"] == ["h1", "h2", "h3"]
        r = await c.get("/label/__name__/values")
        assert "fleetwatch_load1" in r.json()["data"]
        r = await c.get("/metadata")
        assert r.json()["data"]["fleetwatch_uptime_seconds_total"][0]["type"] == "counter"
        r = await c.get("/status/buildinfo")
        assert r.json()["data"]["version"].startswith("2.")
        for bad in ("rate(fleetwatch_cpu_percent[1m])", "fleetwatch_load1 offset 5m", "a + b", "x[5m:1m]",
                    "holt_winters(x[5m], 0.1, 0.1)", "sum(", '{host="h1"} + on(host) x', '{foo=""}'):  # fmt: skip
            r = await c.get("/query", params={"query": bad})
            assert r.status_code == 400, (bad, r.text)
            assert r.json()["errorType"] == "bad_data" and r.json()["error"], bad
        r = await c.get("/query_range", params={"query": "fleetwatch_load1", "start": "x", "end": "1", "step": "1"})
        assert r.status_code == 400 and "start" in r.json()["error"]
        r = await c.get(
            "/query_range", params={"query": "fleetwatch_load1", "start": "0", "end": "1000000", "step": "1"}
        )
        assert r.status_code == 400 and "11,000" in r.json()["error"]
        r = await c.get("/query", params={"query": "fleetwatch_load1", "time": str(d.t0 + 2)})
        assert sorted((s["metric"]["host"], s["value"][1]) for s in r.json()["data"]["result"]) == [
            ("h1", "1.25"), ("h2", "2.25"), ("h3", "3.25")
        ]  # fmt: skip
    # The viewer role is enough, no token is not.
    assert httpx.get(gw.url + "/prometheus/api/v1/labels", timeout=30).status_code == 401
    r = httpx.get(gw.url + "/prometheus/api/v1/labels", auth=("x", "not-a-token"), timeout=30)
    assert r.status_code == 401
    r = httpx.get(gw.url + "/prometheus/api/v1/labels", auth=("grafana", api_token), timeout=30)
    assert r.status_code == 200


async def test_federate_latest_values(gw, api_token, scraped):
    d, _ = scraped
    r = httpx.get(
        gw.url + "/prometheus/federate",
        params=[("match[]", 'fleetwatch_load1{host="h1"}'), ("match[]", "fleetwatch_uptime_seconds_total")],
        headers={"Authorization": f"Bearer {api_token}"},
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    last_t = (d.t0 + SPACING * (FRAMES - 1)) * 1000
    lines = [x for x in r.text.splitlines() if x and not x.startswith("#")]
    assert f'fleetwatch_load1{{host="h1",rack="a"}} {load1(1, FRAMES - 1):g} {last_t}' in lines
    assert "# TYPE fleetwatch_uptime_seconds_total counter" in r.text
    assert len([x for x in lines if x.startswith("fleetwatch_uptime_seconds_total")]) == 3
    r = httpx.get(gw.url + "/prometheus/federate", headers={"Authorization": f"Bearer {api_token}"}, timeout=30)
    assert r.status_code == 400 and r.json()["errorType"] == "bad_data"
