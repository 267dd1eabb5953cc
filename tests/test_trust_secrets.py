"""Trust model, secrets: an operator is not an admin, a viewer even less; a secret never reaches
a role below the one that set it, nor a log line or the audit in clear.

Against a real nats-server, PostgreSQL (ingest writing audit_log), commander, alerter and gateway
process: an operator redirecting an admin's Telegram and email notifiers (the listener never sees
the token or password); what viewers and operators read of jobs, apps, audit and the live
streams; and every GET route of the route table walked as viewer and operator after an admin has
set up secrets, no body nor streamed event holding one."""

from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from msgspec.structs import replace

from libs.runtime import connect
from libs.runtime.jetstream import provision
from libs.schemas.alerting import Notifier
from libs.schemas.secrets import MASK, mask_argv, mask_deep, mask_url
from services.alerter.notify.binding import BindingError, bind
from services.gateway.routes import ROUTE_ROLES
from tests.conftest import service_env
from tests.support.alerting import (
    BotApiServer,
    SmtpServer,
    _Server,
    reset_alerting,
    self_signed,
    start_alerter,
    stop_alerter,
)
from tests.support.commander import APP_PYTHON, CommanderProcess
from tests.support.gateway import create_database, drop_database, running_gateway, sse_events
from tests.support.pipeline import start_ingest

pytestmark = pytest.mark.timeout(300)

HOST = "host-c"
TAG = uuid.uuid4().hex[:8]
TOKEN = f"4242:trust-bot-token-{TAG}"
SMTP_PW = f"smtp-pw-{TAG}"
DB_PW = f"pg-pw-{TAG}"
JOB_PW = f"s3cret-{TAG}"
BEARER = f"bearer-{TAG}-abcdefgh"
SECRETS = (TOKEN, SMTP_PW, DB_PW, JOB_PW, BEARER)
# What a leak looks like even when the value is not one of ours (independent of the masker).
LEAKS = [
    re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@\"]*:(?!\*\*\*@)[^\s@/\"]+@"),  # URL with a password
    re.compile(r"(?i)--?[\w-]*(?:password|token|secret)=(?!\*\*\*)[^\s\"&]"),  # --password=x
    re.compile(r"(?i)\"--?[\w-]*(?:password|token|secret)\",\s*\"(?!\*\*\*\")"),  # "--token", "x"
    re.compile(r"(?i)bearer\s+(?!\*\*\*)[A-Za-z0-9._-]{8,}"),
    re.compile(r"\"DATABASE_URL\":\s*\"(?!\*\*\*\")"),
]


def leaks(text: str) -> list[str]:
    found = [s for s in SECRETS if s in text]
    return found + [m.group(0) for p in LEAKS for m in p.finditer(text)]


# --- the masking and binding rules, without servers -------------------------------------------


def test_masking_rules():
    argv = ["db", f"--password={JOB_PW}", "--token", "t0ken-value", f"-p{JOB_PW}", "-p", "22", "-print"]
    argv += [f"postgres://app:{DB_PW}@db:5432/app", "-H", f"Authorization: Bearer {BEARER}", "AKIAIOSFODNN7EXAMPLE"]
    got = mask_argv(argv)
    assert got == [
        "db", "--password=***", "--token", "***", "-p***", "-p", "22", "-print",
        "postgres://app:***@db:5432/app", "-H", "Authorization: *** ***", "***",
    ]  # fmt: skip
    assert mask_argv(got) == got and not leaks(str(got))
    plain = ["git", "checkout", "0123456789abcdef0123456789abcdef01234567", "--max-tokens=5", "author=bob"]
    assert mask_argv(plain) == plain  # a hex digest, a count, a name are no secrets
    deep = mask_deep({"env": {"DATABASE_URL": f"postgres://app:{DB_PW}@db/app", "EMPTY": ""}, "spec": {"args": argv}})
    assert deep["env"] == {"DATABASE_URL": MASK, "EMPTY": ""} and not leaks(str(deep))
    assert mask_url(f"https://u:{DB_PW}@hooks.example/T0AB12CD3/Xy7Zk9Lm2Qp4Rs6Tu8Vw0Ab1") == (
        "https://u:***@hooks.example/T0AB12CD3/***"
    )


def test_binding_rules():
    admin = bind(
        Notifier(name="tg", kind="telegram", base_url="https://api.telegram.org", bot_token=TOKEN), None, "admin"
    )
    assert admin.secrets_role == "admin"
    moved = Notifier(name="tg", kind="telegram", base_url="http://127.0.0.1:1")
    for role, body, code in [
        ("operator", moved, 403),  # an operator may not send an admin's token elsewhere
        ("operator", replace(moved, bot_token="mine"), 403),  # nor replace it
        ("operator", Notifier(name="tg", kind="webhook", url="http://127.0.0.1:1"), 403),  # nor change the kind
        ("admin", moved, 409),  # an admin moving it must give the token again
    ]:
        with pytest.raises(BindingError) as ei:
            bind(body, admin, role)
        assert ei.value.code == code and str(ei.value)
    kept = bind(Notifier(name="tg", kind="telegram", chat_id="9", enabled=False), admin, "operator")
    assert kept.bot_token == TOKEN and kept.secrets_role == "admin" and kept.chat_id == "9"
    again = bind(replace(moved, bot_token="new"), admin, "admin")
    assert again.bot_token == "new" and again.base_url == "http://127.0.0.1:1"
    mine = bind(Notifier(name="o", kind="webhook", url="http://h/x", webhook_secret="w"), None, "operator")
    assert bind(Notifier(name="o", kind="webhook", url="http://h/y", webhook_secret="w2"), mine, "operator")


# --- the stack -------------------------------------------------------------------------------


class Listener(_Server):
    """The operator's own HTTP server: records every request (path and body) it is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def handle(self, method, path, headers, body):
        with self.lock:
            self.seen.append(path + " " + body.decode(errors="replace"))
        return 200, b'{"ok": true, "result": {}}', "application/json"


class SmtpListener:
    """The operator's own SMTP server: plain text, any AUTH accepted and every credential kept."""

    def __init__(self) -> None:
        from libs.embedded.natsserver import free_port

        self.credentials: list[str] = []

        def authenticator(server, session, envelope, mechanism, auth_data):
            login, password = getattr(auth_data, "login", b""), getattr(auth_data, "password", b"")
            self.credentials.append(f"{login.decode()}:{password.decode()}")  # repr() would hide it
            return AuthResult(success=True, handled=False)

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                return "250 OK"

        self.port = free_port()
        kwargs = {"authenticator": authenticator, "auth_require_tls": False}
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kwargs)

    def start(self) -> SmtpListener:
        self.controller.start()
        return self


@pytest.fixture(scope="module")
async def stack(nats_stack, pg_cluster, workdir):
    d = workdir / f"trust-{TAG}"
    d.mkdir()
    admin_nc = await connect(nats_stack.settings("admin"), "trust-setup", retry_forever=False)
    await provision(admin_nc)
    await reset_alerting(admin_nc)
    dsn = await create_database(pg_cluster.dsn, "trust")
    ingest = start_ingest(nats_stack, dsn, d / "ingest.log")
    cp = CommanderProcess(service_env(**nats_stack.env(host=HOST)), d / "state", d / "commander.log").start()
    await cp.wait_ready(admin_nc, HOST)
    alerter = await start_alerter(nats_stack, consume=False)
    cert, key = self_signed(d)
    bot, smtp = BotApiServer(TOKEN).start(), SmtpServer(cert, key, password=SMTP_PW).start()
    try:
        with running_gateway(nats_stack, dsn, d / "gw") as gw:
            yield {
                "gw": gw,
                "dsn": dsn,
                "nc": admin_nc,
                "bot": bot,
                "smtp": smtp,
                "cert": cert,
                **await seed(gw, smtp, cert, bot),
            }
    finally:
        bot.stop()
        smtp.stop()
        await stop_alerter(alerter)
        cp.stop()
        cp.kill_children()
        ingest.stop()
        await admin_nc.close()
        await drop_database(pg_cluster.dsn, dsn)


def tg_body(bot) -> dict:
    return {"kind": "telegram", "base_url": bot.url, "chat_id": "1"}


def mail_body(smtp, cert) -> dict:
    return {
        "kind": "email", "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_tls": "starttls",
        "smtp_ca_file": str(cert), "smtp_user": smtp.user, "mail_from": "fw@example.org", "mail_to": ["ops@example.org"],
    }  # fmt: skip


async def seed(gw, smtp, cert, bot) -> dict:
    """What an admin sets up: two notifiers with secrets, an app whose env and argv hold a
    database password, a running job whose argv holds a password and a bearer token."""
    async with gw.async_client("admin") as c:
        r = await c.put("/api/v1/notifiers/tg-admin", json={**tg_body(bot), "bot_token": TOKEN})
        assert r.status_code == 200, r.text
        r = await c.put("/api/v1/notifiers/mail-admin", json={**mail_body(smtp, cert), "smtp_password": SMTP_PW})
        assert r.status_code == 200, r.text
        run = {
            "runtime": "binary",
            "argv": [APP_PYTHON, "-c", "import time; time.sleep(600)", f"--db-password={DB_PW}"],
        }
        spec = {"name": "db-app", "run": run, "env": {"DATABASE_URL": f"postgres://app:{DB_PW}@db.internal:5432/app"}}
        r = await c.post(f"/api/v1/hosts/{HOST}/apps", json={"spec": spec, "start": True})
        assert r.status_code == 201, r.text
        argv = [
            APP_PYTHON,
            "-c",
            "import time; time.sleep(120)",
            f"--password={JOB_PW}",
            "--auth",
            f"Bearer {BEARER}",
        ]
        r = await c.post(f"/api/v1/hosts/{HOST}/jobs", json={"argv": argv, "timeout_s": 150})
        assert r.status_code == 201, r.text
        job = r.json()["job"]["id"]
        assert JOB_PW in (await c.get(f"/api/v1/hosts/{HOST}/jobs/{job}")).text  # the admin's view is clear
    return {"job": job}


# --- item 3: notifier secrets bound to their destination --------------------------------------


async def test_operator_cannot_send_the_admin_telegram_token_to_their_listener(stack):
    gw, bot = stack["gw"], stack["bot"]
    listener = Listener().start()
    try:
        statuses = []
        async with gw.async_client("operator") as op:
            # The attack: point the admin's notifier at my listener, keep the token, test-send.
            for body in ({**tg_body(bot), "base_url": listener.url}, {"kind": "webhook", "url": listener.url}):
                r = await op.put("/api/v1/notifiers/tg-admin", json=body)
                statuses.append((r.status_code, r.json().get("detail", "")))
                r = await op.post("/api/v1/notifiers/tg-admin/test", json={"text": "after the attempt"})
                assert r.status_code < 500 or r.status_code == 502, r.text
        assert not any(TOKEN in s for s in listener.seen), listener.seen
        assert listener.seen == [] and all(code == 403 and "admin" in why for code, why in statuses), statuses
        assert "after the attempt" in " ".join(bot.texts())  # the test went where the admin said
        async with gw.async_client("operator") as op:  # routing and chat are not the destination
            r = await op.put("/api/v1/notifiers/tg-admin", json={**tg_body(bot), "chat_id": "2"})
            assert r.status_code == 200 and r.json()["bot_token_set"] and r.json()["secrets_role"] == "admin"
        async with gw.async_client("admin") as admin:
            r = await admin.put("/api/v1/notifiers/tg-admin", json={**tg_body(bot), "base_url": listener.url})
            assert r.status_code == 409 and "bot_token" in r.json()["detail"], r.text
        assert TOKEN not in gw.log()
    finally:
        listener.stop()


async def test_operator_cannot_send_the_admin_smtp_password_to_their_listener(stack):
    gw, smtp, cert = stack["gw"], stack["smtp"], stack["cert"]
    listener = SmtpListener().start()
    try:
        statuses = []
        async with gw.async_client("operator") as op:
            for change in ({"smtp_port": listener.port, "smtp_tls": "none"}, {"smtp_tls": "none"}):
                r = await op.put("/api/v1/notifiers/mail-admin", json={**mail_body(smtp, cert), **change})
                statuses.append((r.status_code, r.json().get("detail", "")))
                await op.post("/api/v1/notifiers/mail-admin/test", json={"text": "mail after the attempt"})
            listing = (await op.get("/api/v1/notifiers")).text
        assert not any(SMTP_PW in c for c in listener.credentials) and listener.credentials == []
        assert all(code == 403 and "smtp_tls" in why for code, why in statuses), statuses
        assert SMTP_PW not in listing and any("mail after the attempt" in b for b in smtp.bodies())
    finally:
        listener.controller.stop()


# --- item 9: what viewers and operators read --------------------------------------------------


async def test_viewer_and_operator_read_no_secret_of_jobs_apps_and_audit(stack):
    gw, job = stack["gw"], stack["job"]
    base = f"/api/v1/hosts/{HOST}"
    for role in ("viewer", "operator"):
        async with gw.async_client(role) as c:
            jobs = await c.get(f"{base}/jobs")
            apps = await c.get(f"{base}/apps")
            assert jobs.status_code == 200 and apps.status_code == 200
            one = next(j for j in jobs.json()["jobs"] if j["id"] == job)
            assert f"--password={MASK}" in one["argv"] and not leaks(jobs.text), (role, leaks(jobs.text))
            app = next(a for a in apps.json()["apps"] if a["spec"]["name"] == "db-app")
            assert app["spec"]["env"] == {"DATABASE_URL": MASK} and not leaks(apps.text), (role, leaks(apps.text))
    async with gw.async_client("operator") as op:
        r = await op.get("/api/v1/audit", params={"host": HOST})
        actions = {i["action"] for i in r.json()["items"]}
        assert {"jobs.run", "apps.register"} <= actions and not leaks(r.text), leaks(r.text)


async def test_audit_at_rest_holds_no_secret(stack):
    rows: list = []
    conn = await asyncpg.connect(stack["dsn"])
    try:
        for _ in range(150):
            rows = await conn.fetch("SELECT action, params::text AS p, error FROM audit_log WHERE host = $1", HOST)
            if {"jobs.run", "apps.register"} <= {r["action"] for r in rows}:
                break
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    stored = " ".join(f"{r['p']} {r['error']}" for r in rows)
    assert {"jobs.run", "apps.register"} <= {r["action"] for r in rows} and not leaks(stored), leaks(stored)
    js = stack["nc"].jetstream()
    sub = await js.subscribe(f"fleet.audit.{HOST}", ordered_consumer=True)
    raw = b""
    try:
        while True:
            try:
                raw += (await sub.next_msg(timeout=1)).data
            except Exception:
                break
    finally:
        await sub.unsubscribe()
    assert b"jobs.run" in raw and not leaks(raw.decode()), leaks(raw.decode())


# --- the route x role x field matrix ------------------------------------------------------------


async def read_stream(c: httpx.AsyncClient, path: str, window: float, during=None) -> tuple[int, str, list[str]]:
    """Status, the text and the event types a stream sends within `window` seconds."""
    text, kinds = [], []
    async with c.stream("GET", path) as r:
        if r.status_code != 200:
            return r.status_code, (await r.aread()).decode(), []

        async def read():
            async for ev in sse_events(r):
                text.append(ev.data)
                kinds.append(ev.event)

        task = asyncio.ensure_future(read())
        if during is not None:
            await during()
        await asyncio.sleep(window)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return 200, "\n".join(text), kinds


async def test_every_get_route_as_viewer_and_operator_holds_no_secret(stack):
    gw = stack["gw"]
    values = {
        "host": HOST,
        "name": "db-app",
        "job_id": stack["job"],
        "username": "admin",
        "pid": "1",
        "token_id": "none",
    }
    gets = [k.split(" ", 1)[1] for k in ROUTE_ROLES if k.startswith("GET ")]
    assert len(gets) >= 30 and "/api/v1/hosts/{host}/jobs/{job_id}" in gets
    failures = []
    for role in ("viewer", "operator"):
        async with gw.async_client(role, timeout=30) as c:
            for template in gets:
                path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)
                if path.endswith("stream"):
                    status, body, _ = await read_stream(c, path, 1.5)
                else:
                    r = await c.get(path)
                    status, body = r.status_code, r.text
                if status == 500 or leaks(body):  # 502-504: a service it asks is away, not a bug
                    failures.append(f"{template} as {role}: {status} {leaks(body) or body[:200]}")
    assert not failures, "\n".join(failures)


async def test_live_streams_carry_no_secret_and_users_only_to_admins(stack):
    gw = stack["gw"]
    n = iter(range(100))

    async def changes():
        async with gw.async_client("admin") as admin:
            r = await admin.post("/api/v1/users", json={"username": f"trust{TAG[:4]}{next(n)}"})
            assert r.status_code == 201, r.text
            r = await admin.post(f"/api/v1/hosts/{HOST}/apps/db-app/restart")
            assert r.status_code in (200, 429), r.text

    for role in ("viewer", "operator"):
        async with gw.async_client(role, timeout=30) as c:
            status, body, kinds = await read_stream(c, "/api/v1/stream", 2.0, changes)
            assert status == 200 and "user" not in kinds and not leaks(body), (role, kinds, leaks(body))
            r = await c.get("/api/v1/stream", params={"kinds": "user"})
            assert r.status_code == 403 and "admin" in r.json()["detail"]
        await asyncio.sleep(1.1)  # past the commander's 1/s limit of the restart
    async with gw.async_client("admin", timeout=30) as c:  # the control: admins do get them
        status, _, kinds = await read_stream(c, "/api/v1/stream?kinds=user", 2.0, changes)
        assert status == 200 and "user" in kinds
