"""Benchmark: the Prometheus API (services/gateway/prometheus/) against the database alone.

RESULT lines:
  promql_vs_sql_p99        p99 of query_range `avg by (host) (fleetwatch_cpu_percent)` over 24 h at
                           60 s step for BENCH_PROMQL_HOSTS hosts (1,000; the 1-minute rollup),
                           through the gateway, ÷ the p99 of one SQL statement giving the same
                           per-host, per-minute answer with asyncpg in the same run (goal <= 1.5)
  promql_p99_ms, promql_sql_p99_ms
  remote_write_vs_copy     samples/s written by POST /prometheus/api/v1/write (snappy protobuf,
                           one request after another) ÷ samples/s of a raw COPY of the same rows
                           into a copy of prom_samples (goal >= 0.5)
  remote_write_samples_per_s, copy_samples_per_s

Own nats-server and PostgreSQL; the machine may be shared, so read the ratios.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import struct
import time

import asyncpg
import httpx

from bench.api_hosts import Stack, pct
from bench.common import result

HOSTS = int(os.environ.get("BENCH_PROMQL_HOSTS", "1000"))
RUNS = int(os.environ.get("BENCH_PROMQL_RUNS", "5"))
RW_REQUESTS = int(os.environ.get("BENCH_PROMQL_RW_REQUESTS", "20"))
RW_SERIES, RW_SAMPLES = 200, 100  # per request: 20,000 samples


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def write_request(series) -> bytes:
    msg = b""
    for labels, samples in series:
        ts = b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in sorted(labels.items()))
        ts += b"".join(_field(2, b"\x09" + struct.pack("<d", v) + b"\x10" + _varint(t)) for t, v in samples)
        msg += _field(1, ts)
    out = _varint(len(msg))
    for i in range(0, len(msg), 60):  # snappy literals only: valid, what matters is the decoder
        chunk = msg[i : i + 60]
        out += bytes([(len(chunk) - 1) << 2]) + chunk
    return out


async def load_rollup(dsn: str, end: float) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        start = int(end // 60) * 60 - 86400
        await conn.copy_records_to_table(
            "hosts", records=[(f"p{h:04d}", "{}") for h in range(HOSTS)], columns=["host", "labels"]
        )
        for h in range(HOSTS):
            rows = [
                (dt.datetime.fromtimestamp(start + 60 * m, dt.UTC), f"p{h:04d}", 12, float((h * 7 + m) % 100))
                for m in range(1441)
            ]
            await conn.copy_records_to_table(
                "metrics_1m", records=rows, columns=["time", "host", "samples", "cpu_percent"]
            )
        await conn.execute("ANALYZE metrics_1m")
    finally:
        await conn.close()


async def sql_latencies(dsn: str, start: float, end: float) -> list[float]:
    conn = await asyncpg.connect(dsn)
    lat = []
    try:
        for _ in range(RUNS):
            t0 = time.perf_counter()
            await conn.fetch(
                """SELECT host, floor(extract(epoch FROM time) / 60) * 60 AS b, avg(cpu_percent)::float8
                     FROM metrics_1m WHERE time >= $1 AND time <= $2 GROUP BY 1, 2 ORDER BY 1, 2""",
                dt.datetime.fromtimestamp(start - 300, dt.UTC),
                dt.datetime.fromtimestamp(end, dt.UTC),
            )
            lat.append((time.perf_counter() - t0) * 1000)
    finally:
        await conn.close()
    return lat


async def copy_rate(dsn: str, rows: list) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE bench_copy (LIKE prom_samples INCLUDING ALL)")
        t0 = time.perf_counter()
        await conn.copy_records_to_table("bench_copy", records=rows, columns=["series_id", "time", "value"])
        return len(rows) / (time.perf_counter() - t0)
    finally:
        await conn.close()


async def run() -> None:
    st = Stack("promql")
    try:
        gw = await st.start_gateway(ingest_schema=True)
        end = float(int(time.time() // 60) * 60)
        await load_rollup(st.dsn, end)
        async with httpx.AsyncClient(base_url=gw.url, headers=gw.headers("viewer"), timeout=600) as c:
            params = {"query": "avg by (host) (fleetwatch_cpu_percent)", "start": end - 86400, "end": end, "step": 60}
            lat = []
            for _ in range(RUNS + 1):
                t0 = time.perf_counter()
                r = await c.get("/prometheus/api/v1/query_range", params=params)
                lat.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200 and len(r.json()["data"]["result"]) == HOSTS, r.text[:300]
            lat = lat[1:]  # the first warms the caches
        sql = await sql_latencies(st.dsn, end - 86400, end)
        # Remote-write: an operator token allowed to write bench-* (the gateway restarted with it).
        r = httpx.post(gw.url + "/api/v1/auth/tokens", json={"name": "rw"}, headers=gw.headers("operator"))
        token, tid = r.json()["token"], r.json()["id"]
        password = gw.admin_password
        gw.stop()
        from tests.support.gateway import start_gateway

        st.gw = gw = start_gateway(
            st.nats, st.dsn, st.dir / "gw2", admin_password=password, remote_write_allow=f"{tid}=bench-*"
        )
        now = int(time.time() * 1000)
        bodies = [
            write_request(
                [
                    ({"__name__": "bench_metric", "host": f"bench-{s % 50}", "s": str(s)},
                     [(now - (q * RW_SAMPLES + i) * 1000, float(i)) for i in range(RW_SAMPLES)])
                    for s in range(RW_SERIES)
                ]
            )
            for q in range(RW_REQUESTS)
        ]  # fmt: skip
        h = {"Authorization": f"Bearer {token}", "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}
        async with httpx.AsyncClient(base_url=gw.url, timeout=600) as c:
            t0 = time.perf_counter()
            for b in bodies:
                r = await c.post("/prometheus/api/v1/write", content=b, headers=h)
                assert r.status_code == 204, r.text
            rw_rate = RW_REQUESTS * RW_SERIES * RW_SAMPLES / (time.perf_counter() - t0)
        rows = [
            (s + 1, dt.datetime.fromtimestamp((now - (q * RW_SAMPLES + i) * 1000) / 1000, dt.UTC), float(i))
            for q in range(RW_REQUESTS)
            for s in range(RW_SERIES)
            for i in range(RW_SAMPLES)
        ]
        cp_rate = await copy_rate(st.dsn, rows)
        p99, sp99 = pct(lat, 99), pct(sql, 99)
        result("promql_vs_sql_p99", p99 / sp99, "ratio")
        result("promql_p99_ms", p99, "ms")
        result("promql_sql_p99_ms", sp99, "ms")
        result("remote_write_vs_copy", rw_rate / cp_rate, "ratio")
        result("remote_write_samples_per_s", rw_rate, "samples/s")
        result("copy_samples_per_s", cp_rate, "samples/s")
    finally:
        st.stop()


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
