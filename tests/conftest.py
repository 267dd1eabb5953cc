"""Real servers for the whole suite: one nats-server (generated auth) and one PostgreSQL cluster
per session; each test gets a fresh database. Tests that kill or restart NATS use `fresh_nats`."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from libs.embedded.stack import NatsStack, make_private_dir, start_postgres  # noqa: E402
from libs.runtime import connect  # noqa: E402
from libs.runtime.jetstream import provision  # noqa: E402

# Host ids that get their own agent credentials in the test NATS server.
TEST_HOSTS = ["host-a", "host-b", "host-c", "local"]


@pytest.fixture(scope="session")
def workdir():
    d = make_private_dir(prefix="fleetwatch-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_stack(workdir):
    st = NatsStack(workdir / "nats-session", TEST_HOSTS).start()
    yield st
    st.stop()


@pytest.fixture
def fresh_nats(workdir):
    """A NATS server of the test's own, for tests that kill, restart or fill it."""
    st = NatsStack(workdir / f"nats-{uuid.uuid4().hex[:8]}", TEST_HOSTS).start()
    yield st
    st.stop()


@pytest.fixture(scope="session")
def pg_cluster(workdir):
    pg = start_postgres(workdir)
    yield pg
    pg.stop()


@pytest.fixture
async def db_dsn(pg_cluster):
    """A fresh, empty database for this test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_cluster.dsn("postgres"))
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield pg_cluster.dsn(name)
    conn = await asyncpg.connect(pg_cluster.dsn("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _provisioned_admin(stack, name: str):
    c = await connect(stack.settings("admin"), name, retry_forever=False)
    await provision(c)
    yield c
    await c.close()


@pytest.fixture
async def nc(nats_stack):
    """An admin connection with every stream provisioned."""
    async for c in _provisioned_admin(nats_stack, "test-admin"):
        yield c


@pytest.fixture
async def admin(fresh_nats):
    """An admin connection to the test's own server (`fresh_nats`), every stream provisioned."""
    async for c in _provisioned_admin(fresh_nats, "test-fresh-admin"):
        yield c


def service_env(**extra: str) -> dict[str, str]:
    """Environment for a service subprocess: this interpreter's, minus any FLEETWATCH_ leftovers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env["PYTHONPATH"] = str(ROOT)
    env["FLEETWATCH_LOG_FORMAT"] = "json"
    # Services refuse to start without it; tests that only check settings get the old default,
    # the others pass their stack's URL.
    env["FLEETWATCH_NATS_URL"] = "nats://127.0.0.1:4222"
    env.update(extra)
    return env
