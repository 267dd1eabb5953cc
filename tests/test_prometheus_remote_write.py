"""node_exporter -> Prometheus in agent mode -> remote-write -> fleetwatch, all real: the host
joins /api/v1/hosts (labelled external) and node_load1 is queryable within 15 s. Then what a
writer may not do: other hosts than its token allows, no or a lower token, bad payloads."""

from __future__ import annotations

import asyncio
import struct
import time

import httpx
import pytest

from tests.support.gateway import apply_ingest_schema, create_database, drop_database, running_gateway, start_gateway
from tests.support.prometheus import have, start_node_exporter, start_prometheus

pytestmark = pytest.mark.skipif(
    not have("prometheus") or not have("prometheus-node-exporter"), reason="needs Debian's prometheus"
)
WRITE = "/prometheus/api/v1/write"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def write_request(series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> bytes:
    """A remote-write WriteRequest, snappy-compressed (literals only: valid, if not small)."""
    msg = b""
    for labels, samples in series:
        ts = b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in sorted(labels.items()))
        ts += b"".join(_field(2, b"\x09" + struct.pack("<d", v) + b"\x10" + _varint(t)) for t, v in samples)
        msg += _field(1, ts)
    out = _varint(len(msg))
    for i in range(0, len(msg), 60):
        chunk = msg[i : i + 60]
        out += bytes([(len(chunk) - 1) << 2]) + chunk
    return out


@pytest.fixture(scope="module")
async def rw_db(pg_cluster):
    dsn = await create_database(pg_cluster.dsn, "gwrw")
    await apply_ingest_schema(dsn)
    yield dsn
    await drop_database(pg_cluster.dsn, dsn)


@pytest.fixture(scope="module")
def writer(nats_stack, rw_db, workdir):
    """An operator's API token, then a gateway (restarted) that lets it write hosts ext-*."""
    with running_gateway(nats_stack, rw_db, workdir / "gw-rw1") as g1:
        r = httpx.post(g1.url + "/api/v1/auth/tokens", json={"name": "agent"}, headers=g1.headers("operator"))
        r.raise_for_status()
        token, tid = r.json()["token"], r.json()["id"]
        password = g1.admin_password
    g2 = start_gateway(
        nats_stack, rw_db, workdir / "gw-rw2", admin_password=password, remote_write_allow=f"{tid}=ext-*"
    )
    try:
        yield g2, token
    finally:
        g2.stop()


async def test_agent_remote_write_reaches_hosts_and_queries(writer, workdir):
    gw, token = writer
    ne = start_node_exporter(workdir / "rw-node")
    port = gw.url.rsplit(":", 1)[1]
    config = f"""
global: {{scrape_interval: 1s, external_labels: {{host: ext-node1}}}}
scrape_configs:
  - job_name: node
    static_configs: [{{targets: ["{ne.url.removeprefix("http://")}"]}}]
remote_write:
  - url: http://127.0.0.1:{port}{WRITE}
    authorization: {{credentials: "{token}"}}
    queue_config: {{batch_send_deadline: 1s}}
"""
    agent = start_prometheus(workdir / "rw-agent", config, agent=True)
    started = time.monotonic()
    try:
        async with gw.async_client("viewer") as c:
            host = load = None
            while time.monotonic() - started < 15:
                hosts = (await c.get("/api/v1/hosts")).json()
                host = next((h for h in hosts if h["host"] == "ext-node1"), None)
                r = await c.get("/prometheus/api/v1/query", params={"query": 'node_load1{host="ext-node1"}'})
                assert r.status_code == 200, r.text
                load = r.json()["data"]["result"]
                if host and load:
                    break
                time.sleep(0.3)
            assert host is not None, "ext-node1 not in /api/v1/hosts within 15 s:\n" + agent.log()[-3000:]
            assert load, "node_load1 not queryable within 15 s:\n" + agent.log()[-3000:]
            assert host["labels"] == {"external": "prometheus"} and host["status"] == "online"
            assert load[0]["metric"]["job"] == "node" and float(load[0]["value"][1]) >= 0
            # A counter written by Prometheus answers rate() (samples every second).
            time.sleep(4)
            r = await c.get(
                "/prometheus/api/v1/query",
                params={"query": 'sum by (host) (rate(node_cpu_seconds_total{host="ext-node1",mode="idle"}[10s]))'},
            )
            res = r.json()["data"]["result"]
            assert r.status_code == 200 and len(res) == 1 and float(res[0]["value"][1]) >= 0, r.text
            r = await c.get("/prometheus/api/v1/label/host/values", params={"match[]": "node_load1"})
            assert r.json()["data"] == ["ext-node1"]
            r = await c.get("/prometheus/api/v1/label/__name__/values")
            assert {"node_load1", "fleetwatch_load1"} <= set(r.json()["data"])
            r = await c.get("/prometheus/api/v1/labels")
            assert {"job", "instance", "host", "__name__"} <= set(r.json()["data"])
    finally:
        agent.stop()
        ne.stop()


async def test_writer_limits_and_bad_payloads(writer):
    gw, token = writer
    now = int(time.time() * 1000)
    ok = write_request([({"__name__": "edge_temp", "host": "ext-2", "room": "b"}, [(now - 1000, 20.5), (now, 21.0)])])
    h = {"Authorization": f"Bearer {token}", "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        r = await c.post(WRITE, content=ok, headers=h)
        assert r.status_code == 204, r.text
        r = await c.post(WRITE, content=ok, headers=h)  # Prometheus retries: the same batch again is fine
        assert r.status_code == 204, r.text
        r = await c.get("/prometheus/api/v1/query", params={"query": "edge_temp", "time": str(now / 1000)}, headers=h)
        assert [(s["metric"]["room"], s["value"][1]) for s in r.json()["data"]["result"]] == [("b", "21")]
        other = write_request([({"__name__": "edge_temp", "host": "core-1"}, [(now, 1.0)])])
        r = await c.post(WRITE, content=other, headers=h)
        assert r.status_code == 403 and "core-1" in r.json()["detail"]
        nohost = write_request([({"__name__": "edge_temp"}, [(now, 1.0)])])
        r = await c.post(WRITE, content=nohost, headers=h)
        assert r.status_code == 400 and "host label" in r.json()["detail"]
        for garbage in (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x10\x00\x00", ok[:-7], b""):
            r = await c.post(WRITE, content=garbage, headers=h)
            assert r.status_code == 400 and "decode" in r.json()["detail"], (garbage, r.text)
        far = write_request([({"__name__": "edge_temp", "host": "ext-2"}, [(1 << 62, 1.0)])])
        r = await c.post(WRITE, content=far, headers=h)
        assert r.status_code == 400 and "outside" in r.json()["detail"], r.text
        r = await c.post(WRITE, content=ok, headers={**h, "Content-Encoding": "gzip"})
        assert r.status_code == 400 and "snappy" in r.json()["detail"]
        assert (await c.post(WRITE, content=ok)).status_code == 401
        # A viewer is below the route's role; an operator's session is not a listed API token.
        assert (await c.post(WRITE, content=ok, headers={**h, **gw.headers("viewer")})).status_code == 403
        r = await c.post(WRITE, content=ok, headers={**h, **gw.headers("operator")})
        assert r.status_code == 403 and "remote_write_allow" in r.json()["detail"]
    # Nothing refused was stored.
    async with gw.async_client("viewer") as c:
        r = await c.get("/prometheus/api/v1/series", params={"match[]": '{__name__="edge_temp"}', "start": "0"})
        assert [s["host"] for s in r.json()["data"]] == ["ext-2"]


async def test_samples_and_queries_sent_as_post_are_not_audited(writer, nc):
    """Grafana POSTs its queries and Prometheus writes every few seconds: neither changes anything
    a person answers for, so neither may bury the audit trail. A real change through the same
    gateway is audited, so the subscription below does hear what is published."""
    gw, token = writer
    heard: list[bytes] = []

    async def hear(m) -> None:
        heard.append(m.data)

    sub = await nc.subscribe("fleet.audit.>", cb=hear)
    try:
        now = int(time.time() * 1000)
        body = write_request([({"__name__": "edge_hum", "host": "ext-3"}, [(now, 40.0)])])
        h = {"Authorization": f"Bearer {token}", "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
            for _ in range(2):
                assert (await c.post(WRITE, content=body, headers=h)).status_code == 204
                auth = {"Authorization": h["Authorization"]}  # a form body, as Grafana sends
                r = await c.post("/prometheus/api/v1/query", data={"query": "edge_hum"}, headers=auth)
                assert r.status_code == 200 and r.json()["data"]["result"], r.text
                r = await c.post("/prometheus/api/v1/series", data={"match[]": "edge_hum"}, headers=auth)
                assert r.status_code == 200, r.text
        async with gw.async_client("operator") as op:
            r = await op.post("/api/v1/auth/tokens", json={"name": "audited-one"})
            assert r.status_code == 201, r.text
        deadline = time.monotonic() + 10
        while not any(b"audited-one" in d for d in heard) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert any(b"audited-one" in d for d in heard), heard
        assert not [d for d in heard if b"prometheus" in d], heard
    finally:
        await sub.unsubscribe()
