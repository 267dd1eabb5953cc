"""Control API of the commander (`fleet.ctl.<host>.<verb>`): requests and replies.

Every request carries `actor`: the gateway fills it with the authenticated user, automation with
its token's name; the commander copies it into the AuditRecord. Errors are NATS micro errors
(headers `Nats-Service-Error-Code` 400/403/404/409/429/500 and a sentence), never a reply body.
"""

from __future__ import annotations

import os
import re
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


# -- who runs what: the run-as policy ----------------------------------------------------------
# The gateway fills `role` with the authenticated caller's role and `policy` with the host's policy
# (KV `fleet_policy`) in jobs.run, jobs.restart and apps.register. Only the gateway (and the NATS
# `admin` identity) may publish on fleet.ctl.*, so the commander takes both as the gateway's word.
# A request without a role gets an operator's rules; one without a policy, the host's default.
Role = Literal["", "viewer", "operator", "admin"]

# Base names of programs that run code they are given (shells, interpreters) or run another
# program (wrappers): as a plain `executables` entry they would let an operator run anything, so
# they may only be allowlisted as an argv prefix naming what they run. A guard against an admin's
# slip, matched on the name; what operators may run is the allowlist itself, matched by realpath.
RUNS_CODE_RE = re.compile(
    r"^(?:[a-z]{0,4}sh|busybox|toybox|python[0-9.]*|pypy[0-9.]*|perl[0-9.]*|ruby[0-9.]*|irb|node(?:js)?|deno|bun"
    r"|php[0-9.]*|lua(?:jit|[0-9.]*)|tclsh[0-9.]*|wish[0-9.]*|expect|[gmn]?awk|sed|env|sudo|su|doas|runuser"
    r"|setpriv|setsid|chroot|nsenter|unshare|xargs|find|nice|nohup|timeout|stdbuf|ionice|taskset|chrt|flock"
    r"|strace|ltrace|gdb|script|watch|time|systemd-run|java|jshell|julia|R|Rscript|erl|escript|elixir|guile"
    r"|sbcl|racket|vim?|nvim|emacs|ed|less|more|man|git|ssh|make|docker|podman|kubectl)$"
)
# Options after which an interpreter reads code from the next argument: an argv prefix that ends
# with one would let the operator supply that code.
INLINE_CODE_OPTIONS = frozenset({"-c", "-e", "-E", "--eval", "-p", "--print", "-r", "--command", "-x"})
USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
MAX_POLICY_ENTRIES = 256


class RunPolicy(Part, kw_only=True, frozen=True):
    """Who a host's jobs and apps run as, and what an operator may run there. An admin may run
    anything as anyone (the host's denylist still applies); an operator only what is listed."""

    # Jobs and apps that name no user run as this one; "" = the host's own default
    # (FLEETWATCH_COMMANDER_RUN_AS, `nobody` unless its owner chose another). Never root.
    run_as: str = ""
    # Absolute paths an operator may run with any arguments; the host resolves argv[0] and each
    # entry with realpath and compares those (a copy or a symlink of a shell is not /usr/bin/ls).
    executables: list[str] = []
    # argv an operator's command must start with exactly (the first an absolute path): how an
    # interpreter is allowed, with the script it runs, e.g. ["/usr/bin/python3", "/opt/report.py"].
    argv_prefixes: list[list[str]] = []
    # Users besides run_as an operator may name; never root (nor any uid 0 on the host).
    operator_users: list[str] = []


# What an operator may run where no policy is stored (the commander's default, which its owner may
# change): programs that only report, under both the merged (/usr/bin) and the classic (/bin)
# layouts. Run as an unprivileged user, they read what any local account may read.
DEFAULT_OPERATOR_EXECUTABLES: tuple[str, ...] = tuple(
    f"{d}/{name}"
    for name in "true false echo sleep id whoami uptime date uname hostname df du free nproc ls stat cat head tail wc ps".split()
    for d in ("/usr/bin", "/bin")
)
DEFAULT_RUN_POLICY = RunPolicy(executables=list(DEFAULT_OPERATOR_EXECUTABLES))


def _path_problem(path: str, what: str) -> str:
    if not path.startswith("/") or any(ord(c) < 32 for c in path):
        return f"{what} {path!r} must be an absolute path without control characters"
    if os.path.normpath(path) != path:
        return f"{what} {path!r} must be a normalised path (no '.', '..' or '//')"
    return ""


def policy_problems(p: RunPolicy) -> list[str]:
    """Why a policy is not acceptable (empty: it is). What only the host can tell (does a user or a
    file exist, is it uid 0 there) the commander checks when it applies the policy."""
    out: list[str] = []
    if len(p.executables) + len(p.argv_prefixes) + len(p.operator_users) > MAX_POLICY_ENTRIES:
        out.append(f"at most {MAX_POLICY_ENTRIES} entries in all")
    for name, what in [(p.run_as, "run_as"), *((u, "operator user") for u in p.operator_users)]:
        if name == "" and what == "run_as":
            continue
        if not USER_RE.match(name):
            out.append(f"{what} {name!r} is not a user name ([a-z_][a-z0-9_.-]*, at most 32 characters)")
        elif name == "root":
            out.append(f"{what} may not be root: operators never run as root, and nothing runs as root by default")
    for exe in p.executables:
        problem = _path_problem(exe, "executable")
        if problem:
            out.append(problem)
        elif RUNS_CODE_RE.match(os.path.basename(exe)):
            out.append(
                f"executable {exe!r} runs whatever code or program it is given: allowlist it in "
                f"argv_prefixes with what it runs (e.g. [{exe!r}, '/opt/tools/report.py'])"
            )
    for prefix in p.argv_prefixes:
        if not prefix:
            out.append("an argv prefix is empty")
            continue
        problem = _path_problem(prefix[0], "argv prefix program")
        if problem:
            out.append(problem)
        elif RUNS_CODE_RE.match(os.path.basename(prefix[0])) and len(prefix) < 2:
            out.append(f"argv prefix {prefix!r} names an interpreter or wrapper alone: add what it runs")
        elif prefix[-1] in INLINE_CODE_OPTIONS:
            out.append(f"argv prefix {prefix!r} ends with {prefix[-1]!r}: the operator would supply the code")
        if any("\x00" in a or len(a) > 4096 for a in prefix):
            out.append(f"argv prefix {prefix[:2]!r}... has an argument with a NUL byte or over 4096 characters")
    return out


# -- what an app runs: one variant per runtime ----------------------------------------------
class PythonRun(Part, kw_only=True, frozen=True, tag="python", tag_field="runtime"):
    # Exactly one of the two: a .py file (absolute, or relative to cwd), or a module run as
    # `python -m module` (http.server, uvicorn, a package of the app's cwd).
    script: str = ""
    module: str = ""
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
    source: str = ""  # the door it came through (ui, cli, api-token, webhook, api), for audit


class AppRegisterRequest(Message, kw_only=True, frozen=True):
    actor: str
    source: str = ""  # the door it came through (ui, cli, api-token, webhook, api), for audit
    spec: AppSpec
    replace: bool = False  # re-register an existing name with a new spec (stopped first)
    start: bool = False
    # process backend: take over this running process (one procs.scan found) instead of starting
    # a new one; its command line must be the spec's argv.
    adopt_pid: int | None = None
    role: Role = ""  # the caller's, set by the gateway (see RunPolicy)
    policy: RunPolicy | None = None


class AppRequest(Message, kw_only=True, frozen=True):
    """apps.start / apps.stop / apps.restart / apps.status / apps.remove."""

    actor: str
    source: str = ""  # the door it came through (ui, cli, api-token, webhook, api), for audit
    name: str


class AppLogsRequest(Message, kw_only=True, frozen=True):
    actor: str
    source: str = ""  # the door it came through (ui, cli, api-token, webhook, api), for audit
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
    source: str = ""  # the door it came through (ui, cli, api-token, webhook, api), for audit
    argv: list[str]
    cwd: str = ""
    user: str = ""  # empty: the policy's run_as
    env: dict[str, str] = {}
    timeout_s: float = 300.0
    role: Role = ""  # the caller's, set by the gateway (see RunPolicy)
    policy: RunPolicy | None = None


class JobRequest(Message, kw_only=True, frozen=True):
    """jobs.get / jobs.stop / jobs.restart / jobs.logs."""

    actor: str
    source: str = ""  # the door it came through (ui, cli, api-token, webhook, api), for audit
    id: str
    lines: int = 200  # jobs.logs only
    # jobs.restart runs the command again under the rules of whoever asks now, not the first caller's.
    role: Role = ""
    policy: RunPolicy | None = None


class JobListRequest(Message, kw_only=True, frozen=True):
    actor: str
    source: str = ""  # the door it came through (ui, cli, api-token, webhook, api), for audit
    limit: int = 100


class JobCleanupRequest(Message, kw_only=True, frozen=True):
    actor: str
    source: str = ""  # the door it came through (ui, cli, api-token, webhook, api), for audit
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
    source: str = ""  # the door it came through (ui, cli, api-token, webhook, api), for audit


class ScannedProc(Part, kw_only=True, frozen=True):
    pid: int
    runtime: Literal["python", "node"]
    cmdline: list[str] = []
    cwd: str = ""
    user: str = ""
    ports: list[int] = []  # TCP ports it listens on
    create_time: float = 0.0
    # The command split the way an app spec wants it (PythonRun/NodeRun), so adopting it
    # registers the command that runs: interpreter, then a script or a `-m` module, then args.
    interpreter: str = ""
    script: str = ""
    module: str = ""  # python only: `python -m module`
    args: list[str] = []


class ScanReply(Message, kw_only=True, frozen=True):
    host: str
    procs: list[ScannedProc] = []
