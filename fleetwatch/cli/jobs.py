"""`jobs HOST [VERB]`: one-shot commands on a host — list, run (optionally waiting for the end),
get, logs, stop, restart, cleanup."""

from __future__ import annotations

import argparse
import time

from . import output
from .apps import parse_env
from .client import CliError
from .common import add_common, client, command, ident, subparsers, want_json

FINISHED = ("succeeded", "failed", "timeout", "stopped")


def job_rows(jobs: list[dict]) -> list[tuple]:
    return [
        (
            j["id"],
            output.state(j["state"]),
            "-" if j.get("exit_code") is None else j["exit_code"],
            output.duration(j.get("duration_s")),
            j.get("actor", ""),
            output.when(j.get("created")),
            " ".join(j.get("argv", [])),
        )
        for j in jobs
    ]


def show_jobs(jobs: list[dict]) -> None:
    output.show(
        output.table(
            ("ID", "STATE", "EXIT", "TOOK", "BY", "CREATED", "COMMAND"), job_rows(jobs), right=("EXIT", "TOOK")
        )
    )


@command
def jobs(args: argparse.Namespace) -> int:
    base = f"/api/v1/hosts/{args.host}/jobs"
    verb = args.verb or "list"
    with client(args) as c:
        if verb == "list":
            r = c.get(base, params={"limit": args.limit})
            if want_json(args):
                output.print_json(r)
            else:
                show_jobs(r.get("jobs", []))
            return 0
        if verb == "logs":
            r = c.get(f"{base}/{args.id}/logs", params={"lines": args.lines})
            if want_json(args):
                output.print_json(r)
            else:
                for ln in r.get("lines", []):
                    print(ln)
            return 0
        if verb == "cleanup":
            r = c.post(f"{base}/cleanup", {"older_than_s": args.older_than_days * 86400})
            if want_json(args):
                output.print_json(r)
            else:
                print(f"{r.get('removed', 0)} finished jobs removed")
            return 0
        if verb == "run":
            argv = args.argv[1:] if args.argv[:1] == ["--"] else list(args.argv)
            if not argv:
                raise CliError("give the command after --, e.g. `fleetwatch jobs HOST run -- df -h`", code=2)
            body = {"argv": argv, "timeout_s": args.timeout, "env": parse_env(args.env, args.env_file)}
            for k in ("cwd", "user"):
                if getattr(args, k):
                    body[k] = getattr(args, k)
            r = c.post(base, body)
            if args.wait:
                return wait(c, base, r["job"], args)
        elif verb == "get":
            r = c.get(f"{base}/{args.id}")
        elif verb == "restart":
            r = c.post(f"{base}/{args.id}/restart")
        else:  # stop
            r = c.post(f"{base}/{args.id}/stop")
    if want_json(args):
        output.print_json(r)
    else:
        show_jobs([r["job"]])
    return 0


def wait(c, base: str, job: dict, args: argparse.Namespace) -> int:
    """Poll until the job ends, print its output, exit 0 only when it succeeded."""
    deadline = time.monotonic() + args.timeout + 30
    delay = 0.2
    while job["state"] not in FINISHED:
        if time.monotonic() > deadline:
            raise CliError(
                f"job {job['id']} still {job['state']} after its timeout; see `fleetwatch jobs {args.host} get {job['id']}`"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
        job = c.get(f"{base}/{job['id']}")["job"]
    logs = c.get(f"{base}/{job['id']}/logs", params={"lines": 5000})
    if want_json(args):
        output.print_json({"job": job, "lines": logs.get("lines", [])})
    else:
        for ln in logs.get("lines", []):
            print(ln)
        if job["state"] != "succeeded":
            show_jobs([job])
    return 0 if job["state"] == "succeeded" else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "jobs",
        help="one-shot commands on a host: list, run, get, logs, stop, restart, cleanup",
        description="`fleetwatch jobs HOST` lists the host's jobs; `fleetwatch jobs HOST run -- CMD ARGS` runs one "
        "(argv, never a shell; operator).",
    )
    p.add_argument("host", metavar="HOST", type=ident, help="host id")
    add_common(p)
    v = subparsers(p, "verb")
    q = v.add_parser("list", help="jobs, newest first (the default)")
    q.add_argument("--limit", type=int, default=50)
    add_common(q)
    q = v.add_parser("run", help="run a command: `run [--wait] -- CMD ARGS...`")
    q.add_argument("argv", nargs="*", help="the command and its arguments, after --")
    q.add_argument("--cwd", help="working directory (absolute)")
    q.add_argument("--user", help="run as this user")
    q.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    q.add_argument("--env-file", metavar="FILE", help="KEY=VALUE lines")
    q.add_argument("--timeout", type=float, default=300.0, help="seconds before the job is stopped (default 300)")
    q.add_argument(
        "-w", "--wait", action="store_true", help="wait for the end, print the output, exit 1 unless it succeeded"
    )
    add_common(q)
    for verb, text in (
        ("get", "one job"),
        ("logs", "a job's output"),
        ("stop", "stop a running job"),
        ("restart", "run a job's command again"),
    ):
        q = v.add_parser(verb, help=text)
        q.add_argument("id", type=ident, help="job id (job_YYYYMMDD_HHMMSS_xxxxxx)")
        if verb == "logs":
            q.add_argument("-n", "--lines", type=int, default=200)
        add_common(q)
    q = v.add_parser("cleanup", help="delete finished jobs older than --older-than-days")
    q.add_argument("--older-than-days", type=float, default=7.0)
    add_common(q)
    p.set_defaults(func=jobs, verb=None, limit=50)
