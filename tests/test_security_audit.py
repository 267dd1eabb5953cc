"""Security audit across the services: secrets never reach logs, events or API responses, and no
shell is anywhere request data can reach.

The secrets flow runs against the real services as subprocesses, every one logging at DEBUG:
password login, a user created with a password who changes it, an API token, Telegram and SMTP
notifiers with a bot token and a password (both sent a test message, one delivered to a local Bot
API server, one refused), a registered host's agent credentials, a job with a secret in its
environment. Then no secret may appear in any service's log, in any message on `fleet.>` (an
admin subscribed to everything during the flow), in the audit table, or in any API response but
the one that hands it out."""

from __future__ import annotations

import ast
import re
import secrets
from pathlib import Path

import httpx
import pytest

from libs.embedded.natsserver import free_port
from libs.runtime import connect
from libs.runtime.jetstream import provision
from libs.schemas import subjects
from tests.support.alerting import BotApiServer
from tests.support.gateway import create_database, drop_database
from tests.support.pipeline import fetch, poll, wait_until
from tests.support.robustness import HOST, Fleet

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parent.parent
CODE_DIRS = ("services", "libs", "fleetwatch", "bench", "infra")


def secret(tag: str) -> str:
    return f"{tag}-{secrets.token_urlsafe(18)}"


class Responses:
    """Every API response of the flow; `hands_out()` marks the one allowed to carry a secret."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.seen: list[tuple[str, str, str]] = []  # (method path, text, secret it hands out)

    async def __call__(self, method: str, path: str, *, expect: int | tuple = (200, 201, 204), **kw) -> httpx.Response:
        r = await self.http.request(method, path, **kw)
        codes = (expect,) if isinstance(expect, int) else expect
        assert r.status_code in codes, f"{method} {path}: {r.status_code} {r.text[:500]}"
        self.seen.append((f"{method} {path}", r.text + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items()), ""))
        return r

    def hands_out(self, value: str) -> str:
        """The last response is the one place `value` may appear."""
        self.seen[-1] = (*self.seen[-1][:2], value)
        return value


async def test_no_secret_in_logs_events_audit_or_responses(fresh_nats, pg_cluster, db_dsn, workdir):
    st = fresh_nats
    admin = await connect(st.settings("admin"), "secrets-admin", retry_forever=False)
    await provision(admin)
    events: list[tuple[str, bytes]] = []

    async def capture(msg) -> None:
        events.append((msg.subject, bytes(msg.data) + repr(msg.headers or {}).encode()))

    await admin.subscribe("fleet.>", cb=capture)
    bot_token, env_bot_token = secret("bot"), secret("envbot")
    smtp_password, env_smtp_password = secret("smtp"), secret("envsmtp")
    bot = BotApiServer(bot_token).start()
    local = await create_database(pg_cluster.dsn, "seclocal")
    fleet = Fleet(st, db_dsn, local, workdir)
    marker = Path(workdir) / f"shell-ran-{secrets.token_hex(4)}"
    try:
        # Secrets the services are configured with, too: they must not be logged either.
        await fleet.start(
            admin,
            FLEETWATCH_ALERTER_TELEGRAM_BOT_TOKEN=env_bot_token,
            FLEETWATCH_ALERTER_TELEGRAM_CHAT_ID="42",
            FLEETWATCH_ALERTER_TELEGRAM_BASE_URL=bot.url,
            FLEETWATCH_ALERTER_SMTP_HOST="127.0.0.1",
            FLEETWATCH_ALERTER_SMTP_PORT=str(free_port()),
            FLEETWATCH_ALERTER_SMTP_USER="alerts",
            FLEETWATCH_ALERTER_SMTP_PASSWORD=env_smtp_password,
            FLEETWATCH_ALERTER_MAIL_FROM="fleet@example.org",
            FLEETWATCH_ALERTER_MAIL_TO='["ops@example.org"]',
            FLEETWATCH_ALERTER_NOTIFY_ATTEMPTS="2",
            FLEETWATCH_ALERTER_NOTIFY_BACKOFF_S="0.05",
        )
        gw = fleet.gw
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as http:
            call = Responses(http)
            login = await call("POST", "/api/v1/auth/login", json={"username": "admin", "password": gw.admin_password})
            admin_session = call.hands_out(login.json()["token"])
            A = {"Authorization": f"Bearer {admin_session}"}
            # A wrong password is refused, and the attempt is not logged with what was typed.
            wrong = secret("wrongpw")
            await call("POST", "/api/v1/auth/login", json={"username": "admin", "password": wrong}, expect=401)

            alice_pw, alice_pw2 = secret("alicepw"), secret("alicepw2")
            await call(
                "POST",
                "/api/v1/users",
                headers=A,
                json={"username": "alice", "password": alice_pw, "role": "operator", "email": "alice@example.org"},
                expect=201,
            )
            r = await call("POST", "/api/v1/auth/login", json={"username": "alice", "password": alice_pw})
            alice_session = call.hands_out(r.json()["token"])
            AL = {"Authorization": f"Bearer {alice_session}"}
            r = await call(
                "POST",
                "/api/v1/auth/password",
                headers=AL,
                json={"current_password": alice_pw, "new_password": alice_pw2},
                expect=(200, 204),
            )
            fresh_session = call.hands_out(r.json()["token"]) if r.status_code == 200 else ""  # a fresh session, once
            await call("PATCH", "/api/v1/users/alice", headers=A, json={"password": alice_pw2 + "x"})
            await call(
                "POST",
                "/api/v1/users",
                headers=A,
                json={"username": "alice", "password": alice_pw, "role": "viewer"},
                expect=409,
            )

            r = await call("POST", "/api/v1/auth/tokens", headers=A, json={"name": "automation"}, expect=(200, 201))
            api_token = call.hands_out(r.json()["token"])
            T = {"Authorization": f"Bearer {api_token}"}
            await call("GET", "/api/v1/auth/me", headers=T)
            await call("GET", "/api/v1/auth/tokens", headers=A)

            # Notifiers with secrets; both get a test message (one delivered, one refused).
            await call(
                "PUT",
                "/api/v1/notifiers/tg",
                headers=A,
                json={"kind": "telegram", "bot_token": bot_token, "chat_id": "42", "base_url": bot.url},
            )
            await call(
                "PUT",
                "/api/v1/notifiers/mail",
                headers=A,
                json={
                    "kind": "email",
                    "smtp_host": "127.0.0.1",
                    "smtp_port": free_port(),
                    "smtp_user": "alerts",
                    "smtp_password": smtp_password,
                    "mail_from": "fleet@example.org",
                    "mail_to": ["ops@example.org"],
                },
            )
            await call("POST", "/api/v1/notifiers/tg/test", headers=A, json={})
            await call("POST", "/api/v1/notifiers/mail/test", headers=A, json={}, expect=(502, 504))
            assert bot.messages, "the Telegram test message did not arrive"
            await call("GET", "/api/v1/notifiers", headers=A)

            # A registered host's agent credentials: shown once.
            r = await call("POST", "/api/v1/hosts", headers=A, json={"host": "web-9"}, expect=201)
            agent_password = call.hands_out(r.json()["password"])
            await call("POST", "/api/v1/hosts", headers=A, json={"host": "web-9"}, expect=409)

            # A job whose environment holds a secret, and whose argv is full of shell syntax:
            # argv is run as is, so the words come back literally and nothing else runs.
            job_secret = secret("jobenv")
            shelly = f"$(touch {marker}); `touch {marker}` && touch {marker} | cat > {marker}"
            r = await call(
                "POST",
                f"/api/v1/hosts/{HOST}/jobs",
                headers=A,
                json={"argv": ["/bin/echo", shelly], "env": {"API_TOKEN": job_secret}},
                expect=201,
            )
            job = r.json()["job"]["id"]

            async def job_done():
                j = (await http.get(f"/api/v1/hosts/{HOST}/jobs/{job}", headers=A)).json()
                return j if j["job"]["state"] not in ("queued", "running") else None

            done = await wait_until(job_done, 30, what="the job finished")
            assert done["job"]["state"] == "succeeded", done
            out = await call("GET", f"/api/v1/hosts/{HOST}/jobs/{job}/logs", headers=A)
            assert shelly in out.text, out.text
            assert not marker.exists(), "shell syntax in argv was run by a shell"

            # Reads that show users, tokens, audit and events.
            for path in (
                "/api/v1/users",
                "/api/v1/users/alice",
                "/api/v1/audit?limit=500",
                "/api/v1/events?limit=500",
                "/api/v1/hosts",
                "/api/v1/alerts?all=true",
            ):
                await call("GET", path, headers=A)

            # The audit table catches up with the flow (the job's audit record is there).
            await wait_until(
                lambda: poll(db_dsn, "SELECT count(*) FROM audit_log WHERE action = 'jobs.run'"),
                60,
                what="the job audited",
            )
            await call("GET", "/api/v1/audit?limit=500", headers=A)

        secret_values = {
            "admin password": gw.admin_password,
            "wrong password typed": wrong,
            "alice's password": alice_pw,
            "alice's new password": alice_pw2,
            "admin session": admin_session,
            "alice session": alice_session,
            **({"alice's fresh session": fresh_session} if fresh_session else {}),
            "api token": api_token,
            "telegram bot token": bot_token,
            "smtp password": smtp_password,
            "env telegram bot token": env_bot_token,
            "env smtp password": env_smtp_password,
            "agent password": agent_password,
            "job env secret": job_secret,
            **{f"nats password of {u}": st.creds[u] for u in ("ingest", "alerter", "gateway")},
        }
        quiet = [n for n, text in fleet.logs().items() if '"level": "debug"' not in text]
        assert not quiet, f"not logging at DEBUG, so not audited at DEBUG: {quiet}"
        carriers = {
            subjects.alerting("notifiers", "put"): (bot_token, smtp_password),
            subjects.ctl(HOST, "jobs.run"): (job_secret,),
        }
        await admin.flush()
        leaks: list[str] = []
        for what, value in secret_values.items():
            for name, text in fleet.logs().items():
                if value in text:
                    i = text.index(value)
                    leaks.append(f"{what} in the {name} log: ...{text[max(0, i - 300) : i + 50]!r}")
            for subject, data in events:
                # A request carries its secret to the one service that uses it, and nowhere else.
                if value in carriers.get(subject, ()):
                    continue
                if value.encode() in data:
                    leaks.append(f"{what} in a message on {subject}")
            for endpoint, text, allowed in call.seen:
                if value in text and value != allowed:
                    leaks.append(f"{what} in the response of {endpoint}")
        rows = await fetch(db_dsn, "SELECT row_to_json(a)::text AS t FROM audit_log a")
        assert rows, "no audit rows"
        for what, value in secret_values.items():
            leaks += [f"{what} in audit_log: {r['t'][:300]}" for r in rows if value in r["t"]]
        assert not leaks, "\n".join(leaks)
        # The flow really ran through NATS: audit records and user changes were seen.
        seen = {s.split(".")[1] for s, _ in events}
        assert {"audit", "users", "alerting", "ctl"} <= seen, seen
        # ...and what is not secret is there to be found (the search looks where things are).
        assert any(b"alice" in d for s, d in events if s == subjects.USERS_CHANGED), "no UserChange naming alice"
        assert any(r"jobs.run" in r["t"] and "API_TOKEN" in r["t"] for r in rows), (
            "the job's audit record lacks its (masked) env"
        )
    finally:
        fleet.stop()
        bot.stop()
        await admin.close()
        await drop_database(pg_cluster.dsn, local)


# -- no shell where request data can reach ---------------------------------------------------

_SHELL_CALLS = {
    ("os", "system"),
    ("os", "popen"),
    ("asyncio", "create_subprocess_shell"),
    ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
}


_SPAWNERS = {
    "run",
    "call",
    "check_call",
    "check_output",
    "Popen",
    "create_subprocess_exec",
    "spawn",
    "run_process",
    "open_process",
}


def _shell_uses(path: Path, root: Path = ROOT) -> list[str]:
    """Calls that hand a string to a shell or to the interpreter: `shell=True` anywhere,
    os.system/popen, create_subprocess_shell, getoutput, and eval/exec of anything but a literal."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = (
            f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else "",
            f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""),
        )
        where = f"{path.relative_to(root)}:{node.lineno}"
        if name in _SHELL_CALLS or (name[0] == "" and name[1] in ("system", "popen", "create_subprocess_shell")):
            found.append(f"{where} {'.'.join(filter(None, name))}")
        if name == ("", "eval") or name == ("", "exec") or (name[1] in ("eval", "exec") and name[0] == "builtins"):
            if not (node.args and isinstance(node.args[0], ast.Constant)):
                found.append(f"{where} {name[1]} of data")
        for kw in node.keywords if name[1] in _SPAWNERS else ():  # (a user's login `shell=` is data)
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                found.append(f"{where} shell={ast.unparse(kw.value)}")
    return found


def test_no_shell_in_the_code():
    files = [p for d in CODE_DIRS for p in (ROOT / d).rglob("*.py") if "node_modules" not in p.parts]
    assert len(files) > 50
    found = [u for p in files for u in _shell_uses(p)]
    assert not found, "a shell or eval/exec where data could reach it:\n" + "\n".join(found)


def test_the_static_check_finds_what_it_looks_for(tmp_path):
    """The check above is not vacuous: each pattern it bans is found in a file that has it."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os, subprocess, asyncio\nfrom os import system\n"
        "def f(cmd, data):\n"
        "    subprocess.run(cmd, shell=True)\n    os.system(cmd)\n    os.popen(cmd)\n    system(cmd)\n"
        "    asyncio.create_subprocess_shell(cmd)\n    eval(data)\n    exec(data)\n    subprocess.getoutput(cmd)\n"
        "    subprocess.run(['ls'], shell=False)\n    eval('1 + 1')\n    User(shell=data)\n"
    )
    found = _shell_uses(bad, tmp_path)
    assert len(found) == 8, found
    assert not [f for f in found if re.search(r":1[234] ", f)], found
