"""Every route x every role, from the one table (services/gateway/routes.py): no token -> 401,
below the route's role -> 403, at or above it -> 2xx. A route added to the table without an
example request here fails this test, so a new resource cannot skip the check.

Adding a route: if a GET with the default path values below answers 2xx, nothing to do;
otherwise add one line to EXAMPLES."""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from libs.runtime import connect
from libs.schemas import Codec, MetricFrame
from libs.schemas import subjects as s
from libs.schemas.control import DEFAULT_OPERATOR_EXECUTABLES
from libs.schemas.metrics import CpuStats, MemStats
from services.gateway.roles import LEVEL, ROLES
from services.gateway.routes import ROUTE_ROLES
from tests.conftest import service_env
from tests.support.alerting import alerting_role_examples, roles_alerter  # noqa: F401 (fixture)
from tests.support.commander import CommanderProcess, RawBody, gateway_role_examples
from tests.support.gateway import apply_ingest_schema, create_database, drop_database, running_gateway

pytestmark = pytest.mark.timeout(240)

HOST = "host-a"
# A stored policy equal to the commander's default: whatever order the matrix runs in, the jobs
# of later tests meet the same rules.
SAME_AS_DEFAULT = {"executables": list(DEFAULT_OPERATOR_EXECUTABLES)}
PATH_VALUES = {"host": HOST, "username": "target1", "pid": "1", "token_id": "none"}
_n = itertools.count()


def frame(host: str = HOST, seq: int = 1) -> MetricFrame:
    return MetricFrame(
        host=host,
        ts=time.time(),
        boot=1,
        seq=seq,
        cpu=CpuStats(percent=12.5, count=4),
        mem=MemStats(total=8, available=4, used=4, percent=50.0),
    )


async def _new_user(gw, c: httpx.AsyncClient) -> str:
    name = f"tmp{next(_n)}"
    r = await c.post("/api/v1/users", json={"username": name}, headers=gw.headers("admin"))
    assert r.status_code == 201, r.text
    return name


async def _policy_to_delete(gw, c: httpx.AsyncClient, path: str):
    """A stored policy at `path` (put as admin), so that the DELETE has something to remove."""
    r = await c.put(path, json=SAME_AS_DEFAULT, headers=gw.headers("admin"))
    assert r.status_code == 200, r.text
    return "DELETE", path, None


async def _new_registration(gw, c: httpx.AsyncClient) -> str:
    host = f"reg{next(_n)}"
    r = await c.post("/api/v1/hosts", json={"host": host}, headers=gw.headers("admin"))
    assert r.status_code == 201, r.text
    return host


async def _new_token(gw, c: httpx.AsyncClient, role: str | None) -> str:
    if role is None:
        return "none"
    r = await c.post("/api/v1/auth/tokens", json={"name": "matrix"}, headers=gw.headers(role))
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def _remote_write(gw, c: httpx.AsyncClient, role: str | None):
    """An empty remote-write batch (snappy of nothing) with an API token of the role: samples are
    written with tokens only, never a browser session (services/gateway/prometheus/remote.py)."""
    headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}
    if role is not None:
        r = await c.post("/api/v1/auth/tokens", json={"name": f"rw{next(_n)}"}, headers=gw.headers(role))
        assert r.status_code == 201, r.text
        headers["Authorization"] = f"Bearer {r.json()['token']}"
    return "POST", "/prometheus/api/v1/write", RawBody(b"\x00", headers)


async def _own_password(gw, c: httpx.AsyncClient, role: str | None):
    """The role's user changes their password from one an admin just set (admin's ends as it was)."""
    if role is None:
        return "POST", "/api/v1/auth/password", {"current_password": "x", "new_password": "whatever-pass"}
    known = f"matrix-pass-{next(_n)}"
    r = await c.patch(f"/api/v1/users/{gw.actor(role)}", json={"password": known}, headers=gw.headers("admin"))
    assert r.status_code == 200, r.text
    gw.use_password(role, known)  # the reset ended the role's sessions
    new = gw.admin_password if role == "admin" else f"matrix-pass-{next(_n)}"
    return "POST", "/api/v1/auth/password", {"current_password": known, "new_password": new}


# route -> async (gw, client, role) -> (method, path, json body)
EXAMPLES = {
    "POST /api/v1/auth/login": lambda gw, c, role: _const(
        "POST", "/api/v1/auth/login", {"username": "target1", "password": "target-password"}
    ),
    "POST /api/v1/auth/tokens": lambda gw, c, role: _const("POST", "/api/v1/auth/tokens", {"name": "m"}),
    "DELETE /api/v1/auth/tokens/{token_id}": lambda gw, c, role: _path(
        "DELETE", "/api/v1/auth/tokens/{}", _new_token(gw, c, role)
    ),
    "POST /api/v1/auth/password": _own_password,
    "POST /api/v1/users": lambda gw, c, role: _const("POST", "/api/v1/users", {"username": f"made{next(_n)}"}),
    "PATCH /api/v1/users/{username}": lambda gw, c, role: _const(
        "PATCH", "/api/v1/users/target1", {"email": "t@example.org"}
    ),
    "DELETE /api/v1/users/{username}": lambda gw, c, role: _path(
        "DELETE", "/api/v1/users/{}", _new_user(gw, c) if role else _const_val("target1")
    ),
    # wait=false: accepted (202) without a replicator on HOST; tests/test_replicator_gateway.py runs one
    "POST /api/v1/hosts/{host}/replication/sync": lambda gw, c, role: _const(
        "POST", f"/api/v1/hosts/{HOST}/replication/sync?wait=false"
    ),
    # Agent registration (tests/test_deploy_registration.py runs the auth callout against it).
    "POST /api/v1/hosts": lambda gw, c, role: _const("POST", "/api/v1/hosts", {"host": f"reg{next(_n)}"}),
    # The run-as policy: admins only (tests/test_trust_policy.py checks what it does).
    "PUT /api/v1/policy": lambda gw, c, role: _const("PUT", "/api/v1/policy", SAME_AS_DEFAULT),
    "PUT /api/v1/hosts/{host}/policy": lambda gw, c, role: _const(
        "PUT", f"/api/v1/hosts/{HOST}/policy", SAME_AS_DEFAULT
    ),
    "DELETE /api/v1/policy": lambda gw, c, role: _policy_to_delete(gw, c, "/api/v1/policy"),
    "DELETE /api/v1/hosts/{host}/policy": lambda gw, c, role: _policy_to_delete(gw, c, f"/api/v1/hosts/{HOST}/policy"),
    "DELETE /api/v1/hosts/{host}/registration": lambda gw, c, role: _path(
        "DELETE", "/api/v1/hosts/{}/registration", _new_registration(gw, c) if role else _const_val("reg0")
    ),
}
# The Prometheus API answers a request without its parameters with 400 bad_data: give them.
_PROM = "/prometheus/api/v1"
for _m in ("GET", "POST"):
    EXAMPLES[f"{_m} {_PROM}/query"] = lambda gw, c, role, m=_m: _const(m, f"{_PROM}/query?query=1%2B1")
    EXAMPLES[f"{_m} {_PROM}/query_range"] = lambda gw, c, role, m=_m: _const(
        m, f"{_PROM}/query_range?query=fleetwatch_load1&start=0&end=60&step=30"
    )
    EXAMPLES[f"{_m} {_PROM}/series"] = lambda gw, c, role, m=_m: _const(
        m, f"{_PROM}/series?match%5B%5D=fleetwatch_load1"
    )
    EXAMPLES[f"{_m} {_PROM}/labels"] = lambda gw, c, role, m=_m: _const(m, f"{_PROM}/labels")
EXAMPLES[f"GET {_PROM}/label/{{name}}/values"] = lambda gw, c, role: _const("GET", f"{_PROM}/label/host/values")
EXAMPLES["POST /prometheus/api/v1/write"] = _remote_write
# Routes a role alone does not open: a remote-write token must also be listed in the gateway's
# remote_write_allow (tests/test_prometheus_remote_write.py writes with one that is).
UNCONFIGURED = {"POST /prometheus/api/v1/write": "remote_write_allow"}
EXAMPLES["GET /prometheus/federate"] = lambda gw, c, role: _const(
    "GET", "/prometheus/federate?match%5B%5D=fleetwatch_load1"
)


# The commander's routes need a commander on HOST (started by the `gw` fixture) and fresh apps/jobs.
WEBHOOK_SECRET = "roles-matrix-webhook-secret"
EXAMPLES.update(gateway_role_examples(HOST, WEBHOOK_SECRET))
EXAMPLES.update(alerting_role_examples())


async def _const(method, path, body=None):
    return method, path, body


async def _const_val(v):
    return v


async def _path(method, template, value_coro):
    return method, template.format(await value_coro), None


def _default(key: str):
    method, path = key.split(" ", 1)
    assert method == "GET", f"add an example request for {key!r} to EXAMPLES"
    for k, v in PATH_VALUES.items():
        path = path.replace("{" + k + "}", v)
    return _const(method, path)


@pytest.fixture(scope="module")
async def roles_db(pg_cluster):
    dsn = await create_database(pg_cluster.dsn, "gwroles")
    await apply_ingest_schema(dsn)
    yield dsn
    await drop_database(pg_cluster.dsn, dsn)


@pytest.fixture(scope="module")
async def roles_commander(nats_stack, workdir):
    cp = CommanderProcess(
        service_env(**nats_stack.env(host=HOST)),
        workdir / "roles-commander",
        workdir / "roles-commander.log",
        job_concurrency="50",
        rate_per_app_s="0",
    ).start()
    admin = await connect(nats_stack.settings("admin"), "roles-commander-wait", retry_forever=False)
    try:
        await cp.wait_ready(admin, HOST)
    finally:
        await admin.close()
    yield cp
    cp.stop()
    cp.kill_children()


@pytest.fixture(scope="module")
def gw(nats_stack, roles_db, workdir, roles_commander, roles_alerter):
    with running_gateway(nats_stack, roles_db, workdir / "gw-roles", webhook_secret=WEBHOOK_SECRET) as g:
        for role in ROLES:
            g.token(role)
        r = httpx.post(
            f"{g.url}/api/v1/users",
            json={"username": "target1", "password": "target-password"},
            headers=g.headers("admin"),
        )
        assert r.status_code == 201, r.text
        yield g


async def _call(c: httpx.AsyncClient, method: str, path: str, body, headers) -> int:
    if path == "/api/v1/stream" or path.endswith("/logs/stream"):
        async with c.stream("GET", path, headers=headers) as r:
            return r.status_code
    if isinstance(body, RawBody):  # the signed webhook: exact bytes and its own headers
        return (await c.request(method, path, content=body.content, headers={**headers, **body.headers})).status_code
    return (await c.request(method, path, json=body, headers=headers)).status_code


async def test_every_route_every_role(gw, nats_stack):
    nc = await connect(nats_stack.settings("admin"), "test-roles", retry_forever=False)
    codec = Codec(MetricFrame)

    async def answer_sample(msg):
        await msg.respond(codec.encode(frame(seq=99)))

    await nc.subscribe(s.sample(HOST), cb=answer_sample)
    await nc.publish(s.metrics(HOST), codec.encode(frame()))
    await nc.flush()
    failures = []
    try:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
            for _ in range(50):  # the gateway has seen the host
                if (await c.get(f"/api/v1/hosts/{HOST}", headers=gw.headers("viewer"))).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            http_routes = [k for k in ROUTE_ROLES if not k.startswith("WS ")]
            assert len(http_routes) >= 20
            for key in http_routes:
                need = ROUTE_ROLES[key]
                for role in (None, *ROLES):
                    build = EXAMPLES.get(key, lambda gw, c, role, key=key: _default(key))
                    method, path, body = await build(gw, c, role)
                    headers = gw.headers(role) if role else {}
                    status = await _call(c, method, path, body, headers)
                    if key == "POST /api/v1/auth/password" and role:
                        gw.forget(role)  # a password change ends the session that made it
                    if key in UNCONFIGURED and role is not None and LEVEL[role] >= LEVEL[need or "viewer"]:
                        # Past the role guard, refused by its own setting (which names it).
                        expected, ok = f"403 naming {UNCONFIGURED[key]}", status == 403
                        again = await c.request(method, path, content=body.content, headers={**headers, **body.headers})
                        ok = ok and UNCONFIGURED[key] in again.text
                    elif need is None or (role is not None and LEVEL[role] >= LEVEL[need]):
                        expected = "2xx"
                        ok = 200 <= status < 300
                    elif role is None:
                        expected, ok = "401", status == 401
                    else:
                        expected, ok = "403", status == 403
                    if not ok:
                        failures.append(f"{key} as {role or 'anonymous'}: {status}, expected {expected}")
    finally:
        await nc.close()
    assert not failures, (
        "\n".join(failures) + "\n" + "\n".join(line for line in gw.log().splitlines() if "error" in line)[-3000:]
    )


async def test_websocket_route_roles(gw):
    ws_routes = [k for k in ROUTE_ROLES if k.startswith("WS ")]
    assert ws_routes
    base = gw.url.replace("http://", "ws://")
    for key in ws_routes:
        need = ROUTE_ROLES[key]
        path = key.split(" ", 1)[1]
        for role in (None, *ROLES):
            url = base + path + (f"?access_token={gw.token(role)}" if role else "")
            allowed = need is None or (role is not None and LEVEL[role] >= LEVEL[need])
            if allowed:
                async with ws_connect(url, open_timeout=10) as ws:
                    await ws.ping()
            else:
                with pytest.raises(InvalidStatus) as ei:
                    async with ws_connect(url, open_timeout=10):
                        pass
                assert ei.value.response.status_code == 403, (key, role)


def test_route_table_matches_the_app():
    """create_app refuses a table that disagrees with the served routes. It also builds without
    a deprecation warning: every dependency, body and parameter is declared the way Litestar 3
    will still read."""
    import warnings

    from services.gateway.app import check_route_table, create_app
    from services.gateway.config import GatewayConfig

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        app = create_app(GatewayConfig(), lifespan_enabled=False)
        assert app.openapi_schema.paths
    ROUTE_ROLES["GET /api/v1/nowhere"] = "viewer"
    try:
        with pytest.raises(RuntimeError, match="nowhere"):
            check_route_table(app)
    finally:
        del ROUTE_ROLES["GET /api/v1/nowhere"]
    assert set(ROUTE_ROLES.values()) <= {None, *ROLES}
