"""Stream provisioning adapts to the cluster: R3 on a real 3-node nats-server cluster on
loopback, R1 on a single server; a stream keeps its data and its R3 with one node killed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from libs.embedded import NatsServer, free_port, natsconfig
from libs.embedded.natscluster import NatsCluster
from libs.runtime import NatsSettings, connect
from libs.runtime.jetstream import cluster_size, provision
from libs.schemas import subjects
from libs.schemas.streams import BUCKETS, STREAMS
from tests.conftest import ROOT, TEST_HOSTS


@pytest.fixture
def cluster(workdir):
    import uuid

    c = NatsCluster(workdir / f"cluster-{uuid.uuid4().hex[:8]}", TEST_HOSTS).start()
    yield c
    c.stop()


async def test_single_server_streams_are_r1(nc):
    assert await cluster_size(nc) == 1
    js = nc.jetstream()
    for spec in STREAMS:
        assert (await js.stream_info(spec.name)).config.num_replicas == 1


async def test_three_node_cluster_gets_r3_and_survives_a_killed_node(cluster):
    admin = await connect(cluster.settings("admin"), "cluster-admin", retry_forever=False)
    try:
        assert await cluster_size(admin) == 3
        await provision(admin)
        js = admin.jetstream()
        for spec in STREAMS:
            info = await js.stream_info(spec.name)
            assert info.config.num_replicas == 3, spec.name
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        for b in BUCKETS:
            info = await js.stream_info(f"KV_{b.bucket}")
            assert info.config.num_replicas == 3

        # An agent publishes through whichever node it reached; the frames are stored R3.
        agent = await connect(cluster.agent_settings("host-a"), "agent-a", retry_forever=False)
        ajs = agent.jetstream()
        for i in range(20):
            await ajs.publish(subjects.metrics("host-a"), b'{"n":%d}' % i, headers={"Nats-Msg-Id": f"host-a:1:{i}"})

        # Kill the METRICS leader: the other two elect a new one and keep taking writes.
        leader = (await js.stream_info("METRICS")).cluster.leader
        idx = [n.config.stem for n in cluster.nodes].index(leader)
        cluster.kill(idx)
        stored = None
        for _ in range(150):  # bounded: 30 s
            try:
                await ajs.publish(
                    subjects.metrics("host-a"), b'{"n":20}', headers={"Nats-Msg-Id": "host-a:1:20"}, timeout=1
                )
                info = await js.stream_info("METRICS")
                if info.cluster.leader and info.cluster.leader != leader:
                    stored = info.state.messages
                    break
            except Exception:
                pass
            await asyncio.sleep(0.2)
        assert stored == 21, "cluster lost or duplicated frames with one node down"

        # Provisioning again while a node is down must not shrink the streams. Streams whose
        # leader was on the killed node answer once they have elected another: retry, bounded.
        for attempt in range(10):
            try:
                await provision(admin)
                break
            except Exception:
                if attempt == 9:
                    raise
                await asyncio.sleep(1)
        assert (await js.stream_info("METRICS")).config.num_replicas == 3

        cluster.restart(idx)
        await agent.close()
    finally:
        await admin.close()


def test_nats_config_cli_writes_cluster_configs(tmp_path):
    inv = tmp_path / "inv.toml"
    inv.write_text('[[hosts]]\nid = "web-1"\n')
    out = tmp_path / "out"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetwatch",
            "nats-config",
            "--inventory",
            str(inv),
            "--out",
            str(out),
            "--cluster",
            "3",
            "--listen",
            "127.0.0.1:14222",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert not (out / "nats.conf").exists()
    cfgs = [json.loads((out / f"nats-{i}.conf").read_text()) for i in (1, 2, 3)]
    assert [c["listen"] for c in cfgs] == ["127.0.0.1:14222", "127.0.0.1:14223", "127.0.0.1:14224"]
    creds = json.loads((out / "credentials.json").read_text())
    for i, c in enumerate(cfgs):
        assert c["server_name"] == f"nats-{i + 1}"
        assert len(c["cluster"]["routes"]) == 2 and f"127.0.0.1:{6222 + i}" not in " ".join(c["cluster"]["routes"])
        assert c["cluster"]["authorization"]["password"] == creds[natsconfig.ROUTE_USER]
        users = {u["user"] for u in c["authorization"]["users"]}
        assert "agent-web-1" in users and natsconfig.ROUTE_USER not in users
    # The route secret is no client identity: no env file for it.
    assert not (out / "env" / f"{natsconfig.ROUTE_USER}.env").exists()
    # Each env file is enough to connect: it names every node.
    env = (out / "env" / "agent-web-1.env").read_text().splitlines()
    assert "FLEETWATCH_NATS_URL=nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224" in env


def test_single_server_config_unchanged_by_cluster_support(tmp_path):
    inv = natsconfig.Inventory(hosts=[natsconfig.InventoryHost(id="web-1")])
    natsconfig.write_config(inv, tmp_path, listen="127.0.0.1:4999")
    cfg = json.loads((tmp_path / "nats.conf").read_text())
    assert "cluster" not in cfg and cfg["listen"] == "127.0.0.1:4999"
    assert natsconfig.ROUTE_USER not in json.loads((tmp_path / "credentials.json").read_text())
    assert "FLEETWATCH_NATS_URL=nats://127.0.0.1:4999" in (tmp_path / "env" / "agent-web-1.env").read_text()


async def test_env_file_alone_connects_and_names_the_client_url(tmp_path):
    """Sourcing one env file is enough: its URL, user and password reach the server it was written
    for; an inventory's client_url (what remote hosts dial) replaces the derived one."""
    port = free_port()
    inv = natsconfig.Inventory(
        server=natsconfig.ServerSection(listen=f"0.0.0.0:{port}"), hosts=[natsconfig.InventoryHost(id="web-1")]
    )
    natsconfig.write_config(inv, tmp_path / "nats", store_dir=str(tmp_path / "js"))
    env = dict(line.split("=", 1) for line in (tmp_path / "nats" / "env" / "agent-web-1.env").read_text().splitlines())
    assert env["FLEETWATCH_NATS_URL"] == f"nats://127.0.0.1:{port}"
    server = NatsServer(tmp_path / "nats" / "nats.conf", port)
    server.start()
    try:
        settings = NatsSettings(
            url=env["FLEETWATCH_NATS_URL"],
            user=env["FLEETWATCH_NATS_USER"],
            password=env["FLEETWATCH_NATS_PASSWORD"],
            inbox_prefix=env["FLEETWATCH_NATS_INBOX_PREFIX"],
        )
        nc = await connect(settings, "env-file", retry_forever=False)
        await nc.close()
    finally:
        server.stop()
    remote = natsconfig.Inventory(
        server=natsconfig.ServerSection(client_url="tls://nats.example:4222"), hosts=inv.hosts
    )
    natsconfig.write_config(remote, tmp_path / "remote")
    assert (
        "FLEETWATCH_NATS_URL=tls://nats.example:4222" in (tmp_path / "remote" / "env" / "agent-web-1.env").read_text()
    )
