"""Running a real commander in tests, and calling its control API like the gateway does."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import psutil

from libs.schemas import subjects
from libs.schemas.control import AppReply
from tests.support.systemd_ns import reachable_prefix

ROOT = Path(__file__).resolve().parent.parent.parent


class CtlFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


async def ctl(
    nc, host: str, verb: str, body: dict | msgspec.Struct, reply_type: type | None = None, timeout: float = 20.0
):
    """One control request; the micro error headers become CtlFailed(code, sentence)."""
    data = msgspec.json.encode(body)
    msg = await nc.request(subjects.ctl(host, verb), data, timeout=timeout)
    hdr = msg.headers or {}
    if "Nats-Service-Error-Code" in hdr:
        raise CtlFailed(int(hdr["Nats-Service-Error-Code"]), hdr.get("Nats-Service-Error", ""))
    if reply_type is None:
        return msgspec.json.decode(msg.data)
    return msgspec.json.decode(msg.data, type=reply_type)


class Collector:
    """Everything published on a subject, decoded; `async with Collector(nc, subject, T)` subscribes."""

    def __init__(self, nc, subject: str, type_: type) -> None:
        self.nc = nc
        self.subject = subject
        self.type = type_
        self.items: list = []
        self._sub = None

    async def __aenter__(self) -> Collector:
        self._sub = await self.nc.subscribe(self.subject, cb=self._cb)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._sub.unsubscribe()

    async def _cb(self, msg) -> None:
        self.items.append(msgspec.json.decode(msg.data, type=self.type))

    async def wait_for(self, pred, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for it in self.items:
                if pred(it):
                    return it
            await asyncio.sleep(0.05)
        raise AssertionError(f"nothing matched in {len(self.items)} items: {self.items[-6:]}")


def _runnable_by_others(path: str) -> bool:
    """Whether an account that owns nothing here may execute `path` (o+x on it and every directory above)."""
    real = Path(os.path.realpath(path))
    return all(os.stat(d).st_mode & stat.S_IXOTH for d in (real, *real.parents))


def app_python() -> str:
    """An interpreter for the apps and jobs the tests run. As root the commander runs them as
    `nobody` (services/commander/policy.py), which often may not enter the venv's home (a 0700
    /root); they need only the standard library, so the system's python3 serves then."""
    if os.geteuid() != 0 or _runnable_by_others(sys.executable):
        return sys.executable
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(cand) and _runnable_by_others(cand):
            return cand
    raise RuntimeError("no python3 the commander's app user may execute; install Debian's python3")


APP_PYTHON = app_python()


def write_apps(d: Path, py_line: str, node_line: str) -> Path:
    """app.py and app.js print ten numbered lines then idle; fail.py exits 3 at once."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "app.py").write_text(
        f"import time\nfor i in range(10):\n    print(f'{py_line} {{i}}', flush=True)\nwhile True:\n    time.sleep(0.2)\n"
    )
    (d / "app.js").write_text(
        f"for (let i = 0; i < 10; i++) console.log(`{node_line} ${{i}}`);\nsetInterval(() => {{}}, 1000);\n"
    )
    (d / "fail.py").write_text("import sys\nprint('failing', flush=True)\nsys.exit(3)\n")
    return d


_RETRY_IN = re.compile(r"retry in ([0-9.]+)s")


async def past_rate_limit(nc, host: str, verb: str, body: dict, reply_type: type | None = None, timeout: float = 15.0):
    """One control request; a 429 from the per-app rate limit is waited out (the time the
    commander names) and retried, so a test pays only the part of the second it has not spent."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await ctl(nc, host, verb, body, reply_type)
        except CtlFailed as exc:
            m = _RETRY_IN.search(exc.message)
            if exc.code != 429 or not m or time.monotonic() > deadline:
                raise
            await asyncio.sleep(float(m.group(1)) + 0.02)


async def app_op(nc, host: str, verb: str, name: str, actor: str = "alice"):
    """apps.start/stop/restart/remove past the rate limit; returns the AppInfo."""
    return (await past_rate_limit(nc, host, verb, {"actor": actor, "name": name}, AppReply)).app


async def register_app(nc, host: str, spec: dict, actor: str = "alice", role: str = "admin", **body):
    """apps.register past the rate limit, as the gateway sends it for an admin (the only role that
    may register: tests/test_trust_policy.py checks what an operator may); returns the AppInfo."""
    body = {"actor": actor, "role": role, "spec": spec, **body}
    return (await past_rate_limit(nc, host, "apps.register", body, AppReply)).app


async def app_status(nc, host: str, name: str):
    return (await ctl(nc, host, "apps.status", {"actor": "alice", "name": name}, AppReply)).app


async def wait_state(nc, host: str, name: str, states: set[str], timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    info = None
    while time.monotonic() < deadline:
        info = await app_status(nc, host, name)
        if info.state in states:
            return info
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never reached {states}; last {info}")


async def remove_apps(nc, host: str, names: list[str]) -> None:
    """End of a test: remove (and so stop) what it registered, all at once since each app has
    its own rate limit; one already gone, or a commander that died with the test, is no error."""
    await asyncio.gather(*(app_op(nc, host, "apps.remove", n, actor="cleanup") for n in names), return_exceptions=True)


# argv prefix that runs a commander as `nobody`: one that may not write units nor drive systemctl.
# The checkout (a `mktemp -d` folder is 0700) or the interpreter (pyenv under /root) may be out of
# nobody's reach: reachable_prefix() lays them open in a private mount namespace of its own, so the
# commander still runs as nobody, from this very code, and nothing on the machine changes mode.
AS_NOBODY = [*reachable_prefix(), "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


class CommanderProcess:
    """`python -m services.commander` as the host agent `agent-<host>`."""

    def __init__(
        self,
        env: dict[str, str],
        state_dir: Path,
        log_path: Path,
        argv_prefix: list[str] | None = None,
        **settings: str,
    ) -> None:
        self.env = dict(env)
        self.env["FLEETWATCH_COMMANDER_STATE_DIR"] = str(state_dir)
        self.env.setdefault("FLEETWATCH_COMMANDER_RECONCILE_INTERVAL_S", "0.5")
        self.env.setdefault("FLEETWATCH_LOG_LEVEL", "INFO")
        if os.geteuid() != 0:  # it cannot switch to `nobody`: its jobs and apps run as itself
            self.env.setdefault("FLEETWATCH_COMMANDER_RUN_AS", pwd.getpwuid(os.geteuid()).pw_name)
        for k, v in settings.items():
            self.env[f"FLEETWATCH_COMMANDER_{k.upper()}"] = v
        self.state_dir = state_dir
        self.log_path = log_path
        self.argv_prefix = argv_prefix or []
        self.proc: subprocess.Popen | None = None

    def start(self) -> CommanderProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.argv_prefix, sys.executable, "-m", "services.commander"],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=self._log,
        )
        return self

    async def wait_ready(self, nc, host: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"commander exited with {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                await ctl(nc, host, "apps.list", {"actor": "test"}, timeout=1.0)
                return
            except Exception as exc:  # not subscribed yet
                last = exc
                await asyncio.sleep(0.1)
        raise RuntimeError(f"commander not ready: {last}; log: {self.log_path.read_text()[-3000:]}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def kill_children(self) -> None:
        """After stop(): end the apps and jobs this commander left running (they outlive it by
        design, so a test must end them itself), found by PID in its state directory."""
        import json

        pids: list[int] = []
        try:
            pids += [
                a["pid"]
                for a in json.loads((self.state_dir / "apps.json").read_text())["apps"].values()
                if a.get("pid")
            ]
        except (OSError, ValueError, KeyError):
            pass
        for meta in (self.state_dir / "jobs").glob("job_*.json"):
            try:
                j = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if j.get("state") == "running" and j.get("pid"):
                pids.append(j["pid"])
        kill_tree_pids(pids)


def kill_tree_pids(pids: list[int]) -> None:
    """End processes a test started (by id), with their children."""
    for pid in pids:
        try:
            p = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        for c in p.children(recursive=True) + [p]:
            try:
                c.kill()
            except psutil.NoSuchProcess:
                pass


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_pid_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def env_clean() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}


# -- the commander's gateway routes in the route x role matrix (tests/test_gateway_roles.py) ----
class RawBody:
    """A request body sent as exact bytes with its own headers (the signed webhook)."""

    def __init__(self, content: bytes, headers: dict[str, str]) -> None:
        self.content = content
        self.headers = headers


def signed_webhook(secret: str, command: dict, ts: float | None = None) -> RawBody:
    from services.gateway.controllers.webhook import SIG_HEADER, TS_HEADER, sign

    content = msgspec.json.encode(command)
    stamp = str(int(ts if ts is not None else time.time()))
    return RawBody(
        content, {TS_HEADER: stamp, SIG_HEADER: sign(secret, stamp, content), "content-type": "application/json"}
    )


def gateway_role_examples(host: str, webhook_secret: str) -> dict:
    """EXAMPLES entries for every commander route: each builds a fresh app or job (as admin) so
    that every allowed role's call can succeed (no 409 from a second start, no 429)."""
    import itertools

    n = itertools.count()
    base = f"/api/v1/hosts/{host}"

    async def app(gw, c, start_argv: list[str] | None = None) -> str:
        name = f"roles{next(n)}"
        argv = start_argv or ["true"]
        spec = {"name": name, "run": {"runtime": "binary", "argv": argv}, "restart": "never"}
        r = await c.post(
            f"{base}/apps", json={"spec": spec, "start": start_argv is not None}, headers=gw.headers("admin")
        )
        assert r.status_code == 201, r.text
        return name

    async def job(gw, c, argv: list[str]) -> str:
        r = await c.post(f"{base}/jobs", json={"argv": argv, "timeout_s": 30}, headers=gw.headers("admin"))
        assert r.status_code == 201, r.text
        return r.json()["job"]["id"]

    async def out(method, path, body=None):
        return method, path, body

    async def with_app(method, suffix, gw, c, start_argv=None):
        return method, f"{base}/apps/{await app(gw, c, start_argv)}{suffix}", None

    async def with_job(method, suffix, gw, c, argv):
        return method, f"{base}/jobs/{await job(gw, c, argv)}{suffix}", None

    k = "/api/v1/hosts/{host}"
    return {
        f"POST {k}/apps": lambda gw, c, role: out(
            "POST",
            f"{base}/apps",
            {"spec": {"name": f"roles{next(n)}", "run": {"runtime": "binary", "argv": ["true"]}, "restart": "never"}},
        ),
        f"GET {k}/apps/{{name}}": lambda gw, c, role: with_app("GET", "", gw, c),
        f"DELETE {k}/apps/{{name}}": lambda gw, c, role: with_app("DELETE", "", gw, c),
        f"POST {k}/apps/{{name}}/start": lambda gw, c, role: with_app("POST", "/start", gw, c),
        f"POST {k}/apps/{{name}}/stop": lambda gw, c, role: with_app("POST", "/stop", gw, c, ["sleep", "20"]),
        f"POST {k}/apps/{{name}}/restart": lambda gw, c, role: with_app("POST", "/restart", gw, c),
        f"GET {k}/apps/{{name}}/logs": lambda gw, c, role: with_app("GET", "/logs", gw, c),
        f"GET {k}/apps/{{name}}/logs/stream": lambda gw, c, role: with_app("GET", "/logs/stream", gw, c),
        f"POST {k}/jobs": lambda gw, c, role: out("POST", f"{base}/jobs", {"argv": ["true"]}),
        f"POST {k}/jobs/cleanup": lambda gw, c, role: out("POST", f"{base}/jobs/cleanup", {"older_than_s": 86400}),
        f"GET {k}/jobs/{{job_id}}": lambda gw, c, role: with_job("GET", "", gw, c, ["true"]),
        f"POST {k}/jobs/{{job_id}}/stop": lambda gw, c, role: with_job("POST", "/stop", gw, c, ["sleep", "20"]),
        f"POST {k}/jobs/{{job_id}}/restart": lambda gw, c, role: with_job("POST", "/restart", gw, c, ["true"]),
        f"GET {k}/jobs/{{job_id}}/logs": lambda gw, c, role: with_job("GET", "/logs", gw, c, ["true"]),
        "POST /api/v1/webhook/command": lambda gw, c, role: out(
            "POST",
            "/api/v1/webhook/command",
            signed_webhook(webhook_secret, {"host": host, "verb": "apps.list", "actor": f"matrix{next(n)}"}),
        ),
    }


def control_examples() -> dict:
    """One example per control API message type (tests/unit/test_schemas.py round-trips them)."""
    from libs.schemas import control as c

    spec = c.AppSpec(
        name="api",
        run=c.NodeRun(script="/srv/api/index.js", args=["--port", "8080"]),
        cwd="/srv/api",
        env={"NODE_ENV": "production"},
    )
    info = c.AppInfo(spec=spec, state="running", pid=42, restarts=1, cpu_percent=1.5, rss=1 << 20)
    job = c.JobInfo(id="job_20260101_120000_abcdef", argv=["uptime"], state="succeeded", exit_code=0, duration_s=0.01)
    return {
        c.AppListRequest: c.AppListRequest(actor="alice"),
        c.AppRegisterRequest: c.AppRegisterRequest(actor="alice", spec=spec, start=True),
        c.AppRequest: c.AppRequest(actor="alice", name="api"),
        c.AppLogsRequest: c.AppLogsRequest(actor="alice", name="api", lines=10, follow=True),
        c.AppReply: c.AppReply(app=info),
        c.AppListReply: c.AppListReply(
            host="web-1",
            apps=[
                info,
                c.AppInfo(spec=c.AppSpec(name="w", backend="systemd", run=c.BinaryRun(argv=["/usr/bin/worker"]))),
            ],
        ),
        c.LogsReply: c.LogsReply(host="web-1", name="api", lines=[c.LogLineOut(ts=1.0, line="hello", level="info")]),
        c.JobRunRequest: c.JobRunRequest(actor="alice", argv=["uptime"], timeout_s=10),
        c.JobRequest: c.JobRequest(actor="alice", id=job.id),
        c.JobListRequest: c.JobListRequest(actor="alice"),
        c.JobCleanupRequest: c.JobCleanupRequest(actor="alice", older_than_s=60),
        c.JobReply: c.JobReply(job=job),
        c.JobListReply: c.JobListReply(host="web-1", jobs=[job]),
        c.JobLogsReply: c.JobLogsReply(id=job.id, lines=["up 3 days"]),
        c.JobCleanupReply: c.JobCleanupReply(removed=2),
        c.ScanRequest: c.ScanRequest(actor="alice"),
        c.ScanReply: c.ScanReply(
            host="web-1", procs=[c.ScannedProc(pid=7, runtime="python", cmdline=["python3", "app.py"], ports=[8000])]
        ),
    }
