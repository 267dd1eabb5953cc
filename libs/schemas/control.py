"""Control API of the commander (`fleet.ctl.<host>.<verb>`): requests and replies.

Every request carries `actor`: the gateway fills it with the authenticated user, automation with
its token's name; the commander copies it into the AuditRecord. Errors are NATS micro errors
(headers `Nats-Service-Error-Code` 400/403/404/409/429/500 and a sentence), never a reply body.
"""

from __future__ import annotations

from typing import Literal

from .base import Message, Part

# Verbs, i.e. the endpoint subjects under fleet.ctl.<host>.
APP_VERBS = (
    "apps.list",
    "apps.register",
    "apps.remove",
    "apps.start",
    "apps.stop",
    "apps.restart",
    "apps.status",
    "apps.logs",
)
JOB_VERBS = ("jobs.run", "jobs.list", "jobs.get", "jobs.stop", "jobs.restart", "jobs.logs", "jobs.cleanup")
SCAN_VERBS = ("procs.scan",)
VERBS = APP_VERBS + JOB_VERBS + SCAN_VERBS

# Micro error codes the commander answers with.
ERROR_CODES = {
    400: "invalid request",
    403: "not permitted",
    404: "not found",
    409: "conflicting state",
    429: "too many requests",
    500: "internal error",
}


# -- what an app runs: one variant per runtime ----------------------------------------------
class PythonRun(Part, kw_only=True, frozen=True, tag="python", tag_field="runtime"):
    script: str  # absolute path of the .py file
    interpreter: str = "python3"  # path or a name found on PATH
    args: list[str] = []


class NodeRun(Part, kw_only=True, frozen=True, tag="node", tag_field="runtime"):
    script: str
    interpreter: str = "node"
    args: list[str] = []


class BinaryRun(Part, kw_only=True, frozen=True, tag="binary", tag_field="runtime"):
    argv: list[str]  # argv[0] a path or a name found on PATH; never run through a shell


Run = PythonRun | NodeRun | BinaryRun

RestartPolicy = Literal["always", "on-failure", "never"]
Backend = Literal["process", "systemd"]


class AppSpec(Part, kw_only=True, frozen=True):
    name: str
    backend: Backend = "process"
    run: Run
    cwd: str = ""
    user: str = ""  # empty: the commander's own user
    env: dict[str, str] = {}
    restart: RestartPolicy = "on-failure"
    max_retries: int = 3  # quick failures in a row before FATAL (Supervisor startretries)
    min_uptime_s: float = 1.0  # a run shorter than this is a quick failure (startsecs / min_uptime)
    backoff_s: float = 1.0  # first restart delay; x1.5 per restart, capped, with jitter (PM2)
    backoff_max_s: float = 15.0
    stop_timeout_s: float = 10.0  # SIGTERM, then SIGKILL after this (stopwaitsecs)
    start_on_boot: bool = True
    description: str = ""


class AppInfo(Part, kw_only=True, frozen=True):
    spec: AppSpec
    state: str = "stopped"
    pid: int | None = None
    restarts: int = 0
    exit_code: int | None = None
    since: float = 0.0
    cpu_percent: float | None = None
    rss: int | None = None
    unit: str = ""  # systemd backend: unit name
    unit_state: str = ""  # systemd backend: ActiveState/SubState
    detail: str = ""


# -- app requests ---------------------------------------------------------------------------
class AppListRequest(Message, kw_only=True, frozen=True):
    actor: str


class AppRegisterRequest(Message, kw_only=True, frozen=True):
    actor: str
    spec: AppSpec
    replace: bool = False  # re-register an existing name with a new spec (stopped first)
    start: bool = False
    # process backend: take over this running process (one procs.scan found) instead of starting
    # a new one; its command line must be the spec's argv.
    adopt_pid: int | None = None


class AppRequest(Message, kw_only=True, frozen=True):
    """apps.start / apps.stop / apps.restart / apps.status / apps.remove."""

    actor: str
    name: str


class AppLogsRequest(Message, kw_only=True, frozen=True):
    actor: str
    name: str
    lines: int = 100  # tail this many lines (max 5000)
    follow: bool = False  # publish new lines on fleet.logs.<host>.<name> while the lease lives
    lease_s: float = 30.0  # renew by sending the request again before it runs out


class AppReply(Message, kw_only=True, frozen=True):
    app: AppInfo


class AppListReply(Message, kw_only=True, frozen=True):
    host: str
    apps: list[AppInfo] = []


class LogLineOut(Part, kw_only=True, frozen=True):
    ts: float
    line: str
    stream: str = "stdout"
    level: str = ""


class LogsReply(Message, kw_only=True, frozen=True):
    host: str
    name: str
    lines: list[LogLineOut] = []
    subject: str = ""  # where follow batches go (when follow was asked)
    lease_until: float = 0.0


# -- jobs -----------------------------------------------------------------------------------
JobState = Literal["queued", "running", "succeeded", "failed", "timeout", "stopped"]


class JobRunRequest(Message, kw_only=True, frozen=True):
    actor: str
    argv: list[str]
    cwd: str = ""
    user: str = ""
    env: dict[str, str] = {}
    timeout_s: float = 300.0


class JobRequest(Message, kw_only=True, frozen=True):
    """jobs.get / jobs.stop / jobs.restart / jobs.logs."""

    actor: str
    id: str
    lines: int = 200  # jobs.logs only


class JobListRequest(Message, kw_only=True, frozen=True):
    actor: str
    limit: int = 100


class JobCleanupRequest(Message, kw_only=True, frozen=True):
    actor: str
    older_than_s: float = 7 * 86400.0


class JobInfo(Part, kw_only=True, frozen=True):
    id: str
    argv: list[str]
    state: JobState
    cwd: str = ""
    user: str = ""
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    exit_code: int | None = None
    duration_s: float | None = None
    pid: int | None = None
    actor: str = ""
    detail: str = ""


class JobReply(Message, kw_only=True, frozen=True):
    job: JobInfo


class JobListReply(Message, kw_only=True, frozen=True):
    host: str
    jobs: list[JobInfo] = []


class JobLogsReply(Message, kw_only=True, frozen=True):
    id: str
    lines: list[str] = []


class JobCleanupReply(Message, kw_only=True, frozen=True):
    removed: int = 0


# -- scan -----------------------------------------------------------------------------------
class ScanRequest(Message, kw_only=True, frozen=True):
    actor: str


class ScannedProc(Part, kw_only=True, frozen=True):
    pid: int
    runtime: Literal["python", "node"]
    cmdline: list[str] = []
    cwd: str = ""
    user: str = ""
    ports: list[int] = []  # TCP ports it listens on
    create_time: float = 0.0


class ScanReply(Message, kw_only=True, frozen=True):
    host: str
    procs: list[ScannedProc] = []
