"""Stand-ins for what cannot exist here, speaking the real protocols over loopback: a Telegram
Bot API server (sendMessage), an HTTP health target whose answer a test sets, a webhook
receiver, an SMTP server (aiosmtpd) with STARTTLS or implicit TLS and AUTH; plus a clock a test
advances by hand."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from libs.embedded.natsserver import free_port
from tests.support.eventually import eventually_sync


class FakeClock:
    """Injected into the alerter instead of time.time: tests move time without sleeping."""

    def __init__(self, start: float | None = None) -> None:
        self.now = start if start is not None else time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class _Server:
    """A threaded HTTP server on 127.0.0.1; `handle(method, path, headers, body)` -> (status, body)."""

    def __init__(self) -> None:
        outer = self
        self.lock = threading.Lock()

        class H(BaseHTTPRequestHandler):
            def _do(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                status, out, ctype = outer.handle(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_HEAD = do_PUT = _do

            def log_message(self, *a) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, method, path, headers, body):  # pragma: no cover - overridden
        raise NotImplementedError


class BotApiServer(_Server):
    """POST /bot<token>/sendMessage like api.telegram.org: 401 for a wrong token, `fail_next`
    answers 502 that many times (to exercise retries)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.messages: list[dict] = []
        self.fail_next = 0
        self.requests = 0
        self.received_at: list[float] = []  # wall time each message arrived

    def handle(self, method, path, headers, body):
        with self.lock:
            self.requests += 1
            if path != f"/bot{self.token}/sendMessage":
                return (
                    401 if path.startswith("/bot") else 404,
                    json.dumps({"ok": False, "error_code": 401, "description": "Unauthorized"}).encode(),
                    "application/json",
                )
            if self.fail_next > 0:
                self.fail_next -= 1
                return 502, b'{"ok":false,"error_code":502,"description":"Bad Gateway"}', "application/json"
            data = json.loads(body or b"{}")
            if not data.get("chat_id") or not data.get("text"):
                return (
                    400,
                    b'{"ok":false,"error_code":400,"description":"Bad Request: message text is empty"}',
                    "application/json",
                )
            self.messages.append(data)
            self.received_at.append(time.time())
            mid = len(self.messages)
        return (
            200,
            json.dumps(
                {"ok": True, "result": {"message_id": mid, "chat": {"id": data["chat_id"]}, "text": data["text"]}}
            ).encode(),
            "application/json",
        )

    def texts(self) -> list[str]:
        with self.lock:
            return [m["text"] for m in self.messages]


class TargetServer(_Server):
    """A /health endpoint whose status and body a test sets."""

    def __init__(self) -> None:
        super().__init__()
        self.status = 200
        self.body = {"status": "ok"}
        self.hits = 0

    def set(self, status: int, body: dict | None = None) -> None:
        with self.lock:
            self.status = status
            if body is not None:
                self.body = body

    def handle(self, method, path, headers, body):
        with self.lock:
            self.hits += 1
            return self.status, json.dumps(self.body).encode(), "application/json"


class WebhookReceiver(_Server):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[dict, bytes]] = []

    def handle(self, method, path, headers, body):
        with self.lock:
            self.received.append(({k.lower(): v for k, v in headers.items()}, body))
        return 200, b"{}", "application/json"


def self_signed(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for `host` (its own CA) and its key, written under `directory`."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class SmtpServer:
    """aiosmtpd on loopback. mode `starttls` (AUTH only after STARTTLS) or `tls` (implicit)."""

    def __init__(
        self, cert: Path, key: Path, mode: str = "starttls", user: str = "alerts", password: str = "smtp-pass-123"
    ) -> None:
        self.messages: list = []
        self.user, self.password = user, password
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cert), str(key))
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                outer.messages.append(envelope)
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == outer.user
                and auth_data.password.decode() == outer.password
            )
            return AuthResult(success=ok, handled=False)

        self.port = free_port()
        kwargs = dict(hostname="127.0.0.1", port=self.port, authenticator=authenticator, auth_require_tls=True)
        if mode == "tls":
            # The whole connection is TLS; aiosmtpd only counts STARTTLS as "TLS" for AUTH.
            kwargs.update(ssl_context=ctx, auth_require_tls=False)
        else:
            kwargs.update(tls_context=ctx, require_starttls=True)
        self.controller = Controller(Handler(), **kwargs)
        self.mode = mode

    def start(self):
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def bodies(self) -> list[str]:
        return [
            e.content.decode(errors="replace") if isinstance(e.content, bytes) else str(e.content)
            for e in self.messages
        ]


async def start_alerter(nats_stack, clock=None, *, consume: bool = True, ticks: bool = False, **settings):
    """An in-process alerter (user `alerter`) with test-friendly defaults; returns it started."""
    from libs.runtime import connect
    from services.alerter.config import AlerterConfig
    from services.alerter.service import Alerter

    defaults = dict(
        builtin_rules=False,
        group_wait_s=0.0,
        group_interval_s=0.0,
        notify_backoff_s=0.05,
        run_checks=False,
        lookback_s=0.0,
        tick_s=0.1,
    )
    defaults.update(settings)
    nc = await connect(nats_stack.settings("alerter"), "alerter-test", retry_forever=False)
    a = Alerter(AlerterConfig(**defaults), nc, clock=clock or time.time)
    await a.start(consume=consume, ticks=ticks)
    return a


async def stop_alerter(a) -> None:
    await a.stop()
    await a.nc.close()


async def reset_alerting(nc) -> None:
    """Tests share one NATS server: each starts with empty alerting buckets."""
    js = nc.jetstream()
    for b in ("alert_state", "alert_config"):
        try:
            await js.delete_key_value(b)
        except Exception:
            pass


async def api(nc, resource: str, verb: str, obj=None):
    """One request to the alerter's API; returns the decoded AlertingReply."""
    from libs.schemas import Codec, encode, subjects
    from libs.schemas.alerting import AlertingReply

    data = encode(obj) if obj is not None else b"{}"
    msg = await nc.request(subjects.alerting(resource, verb), data, timeout=15)
    return Codec(AlertingReply).decode(msg.data)


def frame(
    host: str,
    ts: float,
    seq: int,
    *,
    cpu: float = 10.0,
    mem: float = 20.0,
    interval: float = 5.0,
    disks: list | None = None,
):
    from libs.schemas.metrics import CpuStats, DiskUsage, MemStats, MetricFrame

    return MetricFrame(
        host=host,
        ts=ts,
        boot=1,
        seq=seq,
        interval=interval,
        cpu=CpuStats(percent=cpu, count=4),
        mem=MemStats(total=8 << 30, available=4 << 30, used=4 << 30, percent=mem),
        disks=[DiskUsage(mount=m, total=100, used=int(p), free=100 - int(p), percent=p) for m, p in (disks or [])],
    )


# --- the gateway's route x role matrix (tests/test_gateway_roles.py) ---

import pytest  # noqa: E402


@pytest.fixture(scope="module")
async def roles_alerter(nats_stack):
    """An alerter answering the config API, and a notifier whose test-send succeeds."""
    from libs.runtime import connect
    from libs.schemas.alerting import Notifier

    admin = await connect(nats_stack.settings("admin"), "roles-alerter-reset", retry_forever=False)
    await reset_alerting(admin)
    await admin.close()
    hook = WebhookReceiver().start()
    a = await start_alerter(nats_stack, consume=False)
    await a.api.put(
        "notifier", Notifier(name="roles-hook", kind="webhook", url=hook.url, webhook_secret="roles-hook-secret")
    )
    yield a
    await stop_alerter(a)
    hook.stop()


def alerting_role_examples() -> dict:
    """Example requests for the alerting routes that a plain GET cannot exercise."""
    import itertools

    n = itertools.count()
    rule = {"kind": "metric", "field": "cpu.percent", "op": ">", "threshold": 1e9}
    check = {"url": "http://127.0.0.1:9/health", "enabled": False}
    notifier = {"kind": "webhook", "url": "http://127.0.0.1:9/hook", "enabled": False}

    async def const(method, path, body=None):
        return method, path, body

    async def made(gw, c, kind: str, body: dict) -> str:
        name = f"m{next(n)}"
        r = await c.put(f"/api/v1/{kind}/{name}", json=body, headers=gw.headers("admin"))
        assert r.status_code == 200, r.text
        return name

    async def delete(gw, c, kind, body):
        return "DELETE", f"/api/v1/{kind}/{await made(gw, c, kind, body)}", None

    async def delete_silence(gw, c):
        now = time.time()
        r = await c.post(
            "/api/v1/silences",
            json={"id": "", "matchers": [{"name": "host", "value": "x"}], "starts": now, "ends": now + 60},
            headers=gw.headers("admin"),
        )
        assert r.status_code == 201, r.text
        return "DELETE", f"/api/v1/silences/{r.json()['id']}", None

    now = time.time()
    return {
        "PUT /api/v1/rules/{name}": lambda gw, c, role: const("PUT", f"/api/v1/rules/p{next(n)}", rule),
        "DELETE /api/v1/rules/{name}": lambda gw, c, role: delete(gw, c, "rules", rule),
        "PUT /api/v1/checks/{name}": lambda gw, c, role: const("PUT", f"/api/v1/checks/p{next(n)}", check),
        "DELETE /api/v1/checks/{name}": lambda gw, c, role: delete(gw, c, "checks", check),
        "POST /api/v1/silences": lambda gw, c, role: const(
            "POST",
            "/api/v1/silences",
            {"id": "", "matchers": [{"name": "host", "value": "x"}], "starts": now, "ends": now + 3600},
        ),
        "DELETE /api/v1/silences/{silence_id}": lambda gw, c, role: delete_silence(gw, c),
        "PUT /api/v1/notifiers/{name}": lambda gw, c, role: const("PUT", f"/api/v1/notifiers/p{next(n)}", notifier),
        "DELETE /api/v1/notifiers/{name}": lambda gw, c, role: delete(gw, c, "notifiers", notifier),
        "POST /api/v1/notifiers/{name}/test": lambda gw, c, role: const(
            "POST", "/api/v1/notifiers/roles-hook/test", {"text": "matrix"}
        ),
    }


def schema_examples() -> dict:
    """One example of each alerting message type, for tests/unit/test_schemas.py."""
    from libs.schemas.alerting import (
        AlertingReply,
        AlertRecord,
        Check,
        ConfigDelete,
        ConfigList,
        ConfigPut,
        Matcher,
        NotifierTestSend,
        NotifierView,
        Rule,
        Silence,
    )

    rule = Rule(
        name="cpu_hot",
        field="cpu.percent",
        op=">",
        threshold=90,
        resolve=80,
        for_s=60,
        labels={"team": "infra"},
        hosts=["web-*"],
    )
    return {
        ConfigPut: ConfigPut(rule=rule, actor="alice"),
        ConfigDelete: ConfigDelete(name="cpu_hot", actor="alice"),
        ConfigList: ConfigList(name="cpu_hot", include_inactive=True),
        NotifierTestSend: NotifierTestSend(name="tg", text="hello"),
        AlertingReply: AlertingReply(
            rules=[rule],
            checks=[Check(name="api", url="https://example.test/health", json_field="status", json_value="ok")],
            silences=[Silence(id="s1", matchers=[Matcher(name="host", value="web-.*", op="=~")], starts=1.0, ends=2.0)],
            notifiers=[NotifierView(name="tg", kind="telegram", chat_id="42", bot_token_set=True)],
            alerts=[
                AlertRecord(
                    fingerprint="abc",
                    rule="cpu_hot",
                    kind="metric",
                    host="web-1",
                    state="firing",
                    since=1.0,
                    value=95.0,
                    threshold=90.0,
                )
            ],
        ),
    }


@pytest.fixture(scope="module")
def alerter_process(nats_stack, workdir):
    """`python -m services.alerter` answering the config API, for tests whose body blocks the
    event loop (an in-process alerter could not answer while they wait on a subprocess)."""
    import subprocess
    import sys

    from tests.conftest import ROOT, service_env

    log_path = workdir / f"alerter-proc-{time.time_ns()}.log"
    env = service_env(
        **nats_stack.env("alerter"),
        FLEETWATCH_ALERTER_BUILTIN_RULES="false",
        FLEETWATCH_ALERTER_RUN_CHECKS="false",
        FLEETWATCH_ALERTER_LOOKBACK_S="0",
    )
    with open(log_path, "ab") as log:
        p = subprocess.Popen(
            [sys.executable, "-m", "services.alerter"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        eventually_sync(
            lambda: b'"event": "ready"' in log_path.read_bytes(), 60, context=lambda: log_path.read_text()[-3000:]
        )
        yield p
    finally:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
