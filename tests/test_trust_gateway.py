"""What a network attacker (or a viewer whose token was stolen) can do to the gateway, and what
odd input does: real gateway processes, nats-server and PostgreSQL, plus a real commander and
replicator where the check needs one. docs/security.md names these tests.

Login limits, no account enumeration, no token in the log, a 4xx with a reason for each odd
input, signed webhook timestamps that are numbers, job command lines that fit a listing, host
accounts never shadowed by central users, and browser hardening headers on every answer."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import sys
import time

import msgspec
import pytest
import websockets

from libs.runtime import connect
from libs.runtime.jetstream import provision
from libs.schemas.control import JobInfo
from tests.conftest import service_env
from tests.support.commander import CommanderProcess
from tests.support.gateway import create_database, drop_database, running_gateway
from tests.support.replicator import ReplicatorProcess, local_users, replicator_env

pytestmark = pytest.mark.timeout(240)
HOST = "host-c"
SECRET = "trust-webhook-secret"
LOGIN = "/api/v1/auth/login"
BIG_ARGV = [sys.executable, *["x" * 8192] * 255]  # 255 x 8 KiB: what each argument limit allowed
_addresses = (f"198.51.{i // 250}.{i % 250 + 1}" for i in itertools.count())


def fresh_address() -> dict[str, str]:
    return {"X-Forwarded-For": next(_addresses)}


@pytest.fixture(scope="module")
async def db(pg_cluster):
    dsn = await create_database(pg_cluster.dsn, "trust")
    yield dsn
    await drop_database(pg_cluster.dsn, dsn)


@pytest.fixture(scope="module")
def gw(nats_stack, db, workdir):
    """Reached directly: no proxy is configured, so X-Forwarded-For is the client's own claim."""
    with running_gateway(
        nats_stack, db, workdir / "gw-trust", login_max_failures="5", login_window_s="60", webhook_secret=SECRET
    ) as g:
        for role in ("admin", "operator", "viewer"):
            g.token(role)  # sessions for later tests, before this client's logins are limited
        yield g


@pytest.fixture(scope="module")
def proxied(nats_stack, db, workdir, gw):
    """Behind a configured proxy (loopback): X-Forwarded-For names the client."""
    with running_gateway(
        nats_stack,
        db,
        workdir / "gw-trust-proxied",
        admin_password=gw.admin_password,
        login_max_failures="5",
        forwarded_allow_ips="127.0.0.1",
    ) as g:
        yield g


async def make_user(gw, name: str, password: str = "a good long password", **fields) -> None:
    async with gw.async_client("admin") as c:
        r = await c.post("/api/v1/users", json={"username": name, "password": password, **fields})
        assert r.status_code == 201, r.text


def errors_logged(gw) -> list[str]:
    return [line for line in gw.log().splitlines() if '"level": "error"' in line]


# -- logins ------------------------------------------------------------------------------------


async def test_rotating_x_forwarded_for_does_not_escape_the_login_limit(gw):
    await make_user(gw, "xff_victim")
    async with gw.async_client() as c:
        codes = []
        for _ in range(20):
            r = await c.post(LOGIN, json={"username": "xff_victim", "password": "guess"}, headers=fresh_address())
            codes.append(r.status_code)
    assert codes == [401] * 5 + [429] * 15, codes


async def test_one_account_from_many_clients_is_limited_too(proxied):
    await make_user(proxied, "spread_victim", "the right password")
    async with proxied.async_client() as c:
        codes = []
        for _ in range(21):  # each from its own (proxy-vouched) address: never 5 from one
            r = await c.post(LOGIN, json={"username": "spread_victim", "password": "guess"}, headers=fresh_address())
            codes.append(r.status_code)
        assert codes == [401] * 20 + [429], codes  # 4 x login_max_failures per account
        right = {"username": "spread_victim", "password": "the right password"}
        r = await c.post(LOGIN, json=right, headers=fresh_address())
        assert r.status_code == 429  # a right guess is not told apart while limited
        r = await c.post(LOGIN, json={"username": "someone_else", "password": "x"}, headers=fresh_address())
        assert r.status_code == 401


MALFORMED = {
    "NUL in the password": ("{u}", "pass\x00word"),
    "non-ASCII password": ("{u}", "pässwörd-ü"),
    "huge password": ("{u}", "x" * 100_000),
    "empty password": ("{u}", ""),
    "whitespace-only password": ("{u}", "        "),
    "NUL in the username": ("{u}\x00", "some password"),
    "non-ASCII username": ("{u}é", "some password"),
    "huge username": ("{u}" + "x" * 5000, "some password"),
    "newline in the username": ("{u}\n", "some password"),
}


async def test_malformed_logins_answer_alike_for_known_and_unknown_users_and_count(proxied):
    await make_user(proxied, "enum_known")
    async with proxied.async_client() as c:
        for label, (user, password) in MALFORMED.items():
            seen = {}
            for who in ("enum_known", "enum_nobody"):
                body = {"username": user.format(u=who), "password": password}
                r = await c.post(LOGIN, json=body, headers=fresh_address())
                seen[who] = (r.status_code, r.json()["detail"])
            assert seen["enum_known"] == seen["enum_nobody"], (label, seen)
            assert 400 <= seen["enum_known"][0] < 500 and seen["enum_known"][0] != 429, (label, seen)
        # Malformed tries count like wrong passwords: the 6th from one address is refused.
        one = fresh_address()
        codes = []
        for _ in range(6):
            r = await c.post(LOGIN, json={"username": "enum_nobody", "password": "a\x00b"}, headers=one)
            codes.append(r.status_code)
        assert codes == [400] * 5 + [429], codes
    assert errors_logged(proxied) == []


# -- tokens in the log -------------------------------------------------------------------------


async def test_no_log_line_shows_a_token(gw):
    session = gw.token("viewer")
    async with gw.async_client("viewer") as c:
        api = (await c.post("/api/v1/auth/tokens", json={"name": "log-check"})).json()["token"]
        ws = gw.url.replace("http://", "ws://") + "/api/v1/ws?kinds=frame&access_token="
        for tok in (session, api):
            async with websockets.connect(ws + tok):
                pass
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(ws + "not-a-valid.token-value"):
                pass
    async with gw.async_client() as c, c.stream("GET", f"/api/v1/stream?access_token={session}") as r:
        assert r.status_code == 200  # the query token is what signed this one in
    await asyncio.sleep(0.5)
    log = gw.log()
    for secret in (session, session.rsplit(".", 1)[1], api, "not-a-valid.token-value"):
        assert secret not in log
    assert "WebSocket /api/v1/ws?kinds=frame&access_token=***" in log  # the lines are there, masked


def test_the_log_filter_masks_every_secret_query_parameter():
    from services.gateway.hardening import mask_query_secrets

    line = '1.2.3.4:5 - "GET /api/v1/stream?hosts=a&access_token=abc.def&access%5Ftoken=x&token=y HTTP/1.1" 200'
    assert mask_query_secrets(line) == (
        '1.2.3.4:5 - "GET /api/v1/stream?hosts=a&access_token=***&access%5Ftoken=***&token=*** HTTP/1.1" 200'
    )
    assert mask_query_secrets("/api/v1/ws?password=p;sig=s#f") == "/api/v1/ws?password=***;sig=***#f"
    assert mask_query_secrets("/api/v1/events?host=a&kinds=frame") == "/api/v1/events?host=a&kinds=frame"


# -- odd input ---------------------------------------------------------------------------------


def signed(body: bytes, ts: str) -> dict[str, str]:
    sig = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Fleetwatch-Timestamp": ts, "X-Fleetwatch-Signature": sig}


async def test_odd_input_gets_a_4xx_with_a_reason(gw):
    body = b'{"host":"host-c","verb":"jobs.list"}'
    now = str(time.time())
    cases = [
        # (what, role, method, path, request kwargs, status)
        ("non-ASCII session token", None, "GET", "/api/v1/hosts", {"headers": {"Authorization": b"Bearer a.t\xe9st"}}, 401),
        ("non-ASCII API token", None, "GET", "/api/v1/hosts", {"headers": {"Authorization": b"Bearer fwk_\xe9_x"}}, 401),
        ("NUL in a query token", None, "GET", "/api/v1/stream?access_token=a%00b", {}, 400),
        ("NUL in the path", "admin", "GET", "/api/v1/users/a%00b", {}, 400),
        ("newline in the path", "admin", "PATCH", "/api/v1/users/a%0Ab", {"json": {"email": ""}}, 400),
        ("NUL in the query", "operator", "GET", "/api/v1/audit?actor=a%00b", {}, 400),
        ("NUL in a login name", None, "POST", LOGIN, {"json": {"username": "a\x00", "password": "x"}}, 400),
        ("NUL in a login password", None, "POST", LOGIN, {"json": {"username": "nobody", "password": "\x00"}}, 400),
        ("NUL in a new password", "admin", "POST", "/api/v1/users", {"json": {"username": "nul_pw", "password": "12345678\x00"}}, 400),
        ("NUL in an email", "admin", "POST", "/api/v1/users", {"json": {"username": "nul_mail", "email": "a\x00@b.c"}}, 400),
        ("NUL in a token name", "viewer", "POST", "/api/v1/auth/tokens", {"json": {"name": "ci\x00"}}, 400),
        ("non-ASCII webhook signature", None, "POST", "/api/v1/webhook/command",
         {"content": body, "headers": {"X-Fleetwatch-Timestamp": now, "X-Fleetwatch-Signature": b"sha256=\xe9"}}, 401),
    ]  # fmt: skip
    for what, role, method, path, kwargs, status in cases:
        async with gw.async_client(role) as c:
            r = await c.request(method, path, **kwargs)
        assert r.status_code == status, (what, r.status_code, r.text)
        assert r.json()["detail"], what
    assert errors_logged(gw) == []


@pytest.mark.parametrize("ts", ["nan", "NaN", "inf", "-inf", "1e999", "infinity"])
async def test_webhook_timestamps_must_be_finite_numbers(gw, ts):
    body = b'{"host":"host-c","verb":"jobs.list"}'
    async with gw.async_client() as c:
        r = await c.post("/api/v1/webhook/command", content=body, headers=signed(body, ts))
    assert r.status_code == 401 and "finite" in r.json()["detail"], r.text


async def test_blank_passwords_are_refused(gw):
    await make_user(gw, "blank_check", "a good long password")
    async with gw.async_client("admin") as adm:
        for blank in (" " * 8, "\t" * 10, " \n \u00a0 \t  "):
            r = await adm.post("/api/v1/users", json={"username": "blank_new", "password": blank})
            assert r.status_code == 400 and "password" in r.text, r.text
            r = await adm.patch("/api/v1/users/blank_check", json={"password": blank})
            assert r.status_code == 400 and "password" in r.text, r.text
    async with gw.async_client() as c:
        tok = (await c.post(LOGIN, json={"username": "blank_check", "password": "a good long password"})).json()
        r = await c.post(
            "/api/v1/auth/password",
            json={"current_password": "a good long password", "new_password": " " * 12},
            headers={"Authorization": f"Bearer {tok['token']}"},
        )
        assert r.status_code == 400, r.text


# -- commander: job command lines --------------------------------------------------------------


@pytest.fixture(scope="module")
async def commander(nats_stack, workdir):
    admin = await connect(nats_stack.settings("admin"), "trust-setup", retry_forever=False)
    await provision(admin)
    d = workdir / "trust-commander"
    jobs = d / "state" / "jobs"
    jobs.mkdir(parents=True)
    # What an older commander accepted and kept: five 2 MiB command lines, 10 MiB in one listing.
    for i in range(5):
        info = JobInfo(id=f"job_20250101_00000{i}_abcde{i}", argv=BIG_ARGV, state="succeeded", created=1.0 + i)
        (jobs / f"{info.id}.json").write_bytes(msgspec.json.encode(info))
    cp = CommanderProcess(service_env(**nats_stack.env(host=HOST)), d / "state", d / "commander.log").start()
    await cp.wait_ready(admin, HOST)
    yield cp
    cp.stop()
    cp.kill_children()
    await admin.close()


async def test_a_huge_command_line_is_refused_and_listings_stay_small(gw, commander):
    async with gw.async_client("operator") as op, gw.async_client("viewer") as viewer:
        r = await op.post(f"/api/v1/hosts/{HOST}/jobs", json={"argv": BIG_ARGV})
        assert r.status_code == 400 and "command line" in r.json()["detail"], r.text[:300]
        r = await viewer.get(f"/api/v1/hosts/{HOST}/jobs", timeout=40)
        assert r.status_code == 200, r.text[:300]
        assert len(r.content) < 256 * 1024
        listed = r.json()["jobs"]
        assert len(listed) == 5 and all(j["argv"][-1] == "…(+224 more arguments)" for j in listed)
        r = await op.get(f"/api/v1/hosts/{HOST}/jobs/{listed[0]['id']}", timeout=40)
        assert r.status_code == 200 and len(r.json()["job"]["argv"]) == 256  # one job: all of it


# -- replicator: central users never shadow host accounts --------------------------------------

PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
localbob:x:1000:1000:Bob:/home/localbob:/bin/bash
"""


async def test_users_clashing_with_local_accounts_are_not_replicated(gw, db, pg_cluster, nats_stack, workdir):
    passwd = workdir / "trust-passwd"
    passwd.write_text(PASSWD)
    await make_user(gw, "daemon", system_uid=30001)  # a local name
    await make_user(gw, "uid_clash", system_uid=1000)  # a local uid
    await make_user(gw, "localbob", system_uid=30002)  # a local name, and its uid is free
    await make_user(gw, "fw_nobody", system_uid=65534)  # nobody's uid, whatever the file says
    await make_user(gw, "fw_fine", system_uid=30003)
    local_dsn = await create_database(pg_cluster.dsn, "trustlocal")
    env = replicator_env(service_env, nats_stack.env(host=HOST), db, local_dsn, interval=3600, local_passwd=str(passwd))
    repl = ReplicatorProcess(env, workdir / "trust-replicator.log").start()
    try:
        async with gw.async_client("operator") as op:
            for _ in range(100):  # until the replicator has subscribed
                r = await op.post(f"/api/v1/hosts/{HOST}/replication/sync", params={"timeout": 30})
                if r.status_code != 503:
                    break
                await asyncio.sleep(0.2)
        assert r.status_code == 200 and r.json()["ok"], r.text
        skipped = r.json()["skipped"]
        for name in ("daemon", "uid_clash", "localbob", "fw_nobody"):
            assert any(s.startswith(f"{name}: ") for s in skipped), (name, skipped)
        local = await local_users(local_dsn)
        assert "fw_fine" in local and not {"daemon", "uid_clash", "localbob", "fw_nobody"} & set(local)
        assert all(row[1] not in (1000, 65534) for row in local.values())  # (username, uid, ...)
        # A local account added later pushes out the central user that now clashes with it.
        passwd.write_text(PASSWD + "fw_fine:x:1500:1500::/home/fw_fine:/bin/sh\n")
        async with gw.async_client("operator") as op:
            r = await op.post(f"/api/v1/hosts/{HOST}/replication/sync", params={"timeout": 30})
        assert r.status_code == 200 and any(s.startswith("fw_fine: ") for s in r.json()["skipped"])
        assert "fw_fine" not in await local_users(local_dsn)
    finally:
        repl.stop()
        await drop_database(pg_cluster.dsn, local_dsn)


# -- browser headers ---------------------------------------------------------------------------


async def test_every_answer_carries_csp_and_frame_headers(gw):
    async with gw.async_client() as c:
        index = await c.get("/")
        paths = ["/", "/healthz", "/api/v1/hosts", "/no-such-page"]
        asset = next((p for p in index.text.split('"') if p.startswith("/assets/")), None)
        if asset:
            paths.append(asset)
        for path in paths:
            r = await c.get(path)
            csp = r.headers.get("content-security-policy", "")
            assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, (path, r.headers)
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert r.headers.get("x-frame-options") == "DENY", path
            assert r.headers.get("x-content-type-options") == "nosniff", path
            assert r.headers.get("referrer-policy") == "no-referrer", path
        docs = await c.get("/api/docs/swagger")  # CDN bundles: only framing is forbidden there
        assert docs.status_code == 200 and docs.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert docs.headers["x-frame-options"] == "DENY"
