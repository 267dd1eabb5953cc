"""`apps HOST [VERB]`: a host's supervised programs, like supervisorctl/pm2 —
list, status, start, stop, restart, logs [-f], register, remove."""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import output
from .client import CliError
from .common import add_common, client, command, ident, subparsers, want_json


def run_text(run: dict) -> str:
    if run.get("runtime") == "binary":
        return " ".join(run.get("argv", []))
    return " ".join([run.get("interpreter", ""), run.get("script", ""), *run.get("args", [])]).strip()


def app_rows(apps: list[dict], now: float) -> list[tuple]:
    rows = []
    for a in apps:
        sp = a["spec"]
        up = output.duration(now - a["since"]) if a.get("state") == "running" and a.get("since") else "-"
        rows.append(
            (
                sp["name"],
                output.state(a.get("state")),
                a.get("pid") or "-",
                a.get("restarts", 0),
                output.pct(a.get("cpu_percent")),
                output.size(a.get("rss")),
                up,
                sp.get("backend", "process"),
                run_text(sp.get("run", {})),
            )
        )
    return rows


def show_apps(apps: list[dict]) -> None:
    output.show(
        output.table(
            ("NAME", "STATE", "PID", "RESTARTS", "CPU", "RSS", "UPTIME", "BACKEND", "COMMAND"),
            app_rows(apps, time.time()),
            right=("PID", "RESTARTS", "CPU", "RSS"),
        )
    )


def parse_env(pairs: list[str], env_file: str | None) -> dict[str, str]:
    env: dict[str, str] = {}
    lines: list[str] = []
    if env_file:
        try:
            with open(env_file, encoding="utf-8") as f:
                lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
        except OSError as exc:
            raise CliError(f"cannot read {env_file}: {exc.strerror}", code=2) from None
    for item in lines + list(pairs):
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise CliError(f"environment entry {item.split('=')[0]!r} is not KEY=VALUE", code=2)
        env[k] = v
    return env


def build_spec(args: argparse.Namespace) -> dict:
    if args.spec:
        try:
            with open(args.spec, encoding="utf-8") as f:
                spec = json.load(f)
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read the spec {args.spec}: {exc}", code=2) from None
        if not isinstance(spec, dict):
            raise CliError("the spec file must hold one JSON object (an AppSpec)", code=2)
        spec.setdefault("name", args.name)
        if spec["name"] != args.name:
            raise CliError(f"the spec names {spec['name']!r}, not {args.name!r}", code=2)
        return spec
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if args.python or args.node:
        runtime = "python" if args.python else "node"
        run = {"runtime": runtime, "script": args.python or args.node, "args": argv}
        if args.interpreter:
            run["interpreter"] = args.interpreter
    elif argv:
        run = {"runtime": "binary", "argv": argv}
    else:
        raise CliError("say what to run: --python SCRIPT, --node SCRIPT, -- ARGV..., or --spec FILE", code=2)
    spec = {
        "name": args.name,
        "backend": args.backend,
        "run": run,
        "restart": args.restart,
        "env": parse_env(args.env, args.env_file),
        "start_on_boot": not args.no_boot,
    }
    for k in ("cwd", "user", "description"):
        if getattr(args, k):
            spec[k] = getattr(args, k)
    return spec


def follow(c, base: str, args: argparse.Namespace) -> int:
    with c.events(f"{base}/logs/stream", {"lines": args.lines}) as events:
        for kind, data in events:
            if kind != "logs" or not data:
                continue
            for ln in data.get("lines", []):
                print_line(ln, args)
            sys.stdout.flush()
    return 0


def print_line(ln: dict, args: argparse.Namespace) -> None:
    if want_json(args):
        output.print_jsonl(ln)
    elif args.timestamps:
        print(f"{output.when(ln.get('ts'))} {ln.get('stream', 'stdout'):6} {ln.get('line', '')}")
    else:
        print(ln.get("line", ""))


@command
def apps(args: argparse.Namespace) -> int:
    host = args.host
    base = f"/api/v1/hosts/{host}/apps"
    verb = args.verb or "list"
    with client(args) as c:
        if verb == "list":
            r = c.get(base)
            if want_json(args):
                output.print_json(r)
            else:
                show_apps(r.get("apps", []))
            return 0
        if verb == "logs":
            # like tail: the last 10 lines, then new ones; without -f a longer tail
            args.lines = args.lines if args.lines is not None else (10 if args.follow else 100)
            if args.follow:
                return follow(c, f"{base}/{args.name}", args)
            r = c.get(f"{base}/{args.name}/logs", params={"lines": args.lines})
            for ln in r.get("lines", []):
                print_line(ln, args)
            return 0
        if verb == "register":
            body = {"spec": build_spec(args), "replace": args.replace, "start": args.start}
            r = c.post(base, body)
        elif verb == "remove":
            r = c.delete(f"{base}/{args.name}")
        elif verb == "status":
            r = c.get(f"{base}/{args.name}")
        else:  # start / stop / restart
            r = c.post(f"{base}/{args.name}/{verb}")
    if want_json(args):
        output.print_json(r)
        return 0
    a = r["app"]
    done = {
        "register": "registered",
        "remove": "removed",
        "start": "started",
        "stop": "stopped",
        "restart": "restarted",
    }.get(verb)
    if done:
        pid = f", pid {a['pid']}" if a.get("pid") else ""
        print(f"{a['spec']['name']} on {host}: {done} (state {a.get('state')}{pid})")
    if verb == "status" or a.get("detail"):
        show_apps([a])
        if a.get("detail"):
            print(a["detail"])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "apps",
        help="a host's apps: list, status, start, stop, restart, logs [-f], register, remove",
        description="`fleetwatch apps HOST` lists the apps of HOST; `fleetwatch apps HOST VERB NAME` acts on one. "
        "Viewers read, operators start/stop/restart and read logs, admins register and remove.",
    )
    p.add_argument("host", metavar="HOST", type=ident, help="host id")
    add_common(p)
    v = subparsers(p, "verb")
    q = v.add_parser("list", help="the host's apps and their state (the default)")
    add_common(q)
    for verb, text in (
        ("status", "one app's state"),
        ("start", "start an app"),
        ("stop", "stop an app (SIGTERM, then SIGKILL after its stop timeout)"),
        ("restart", "restart an app"),
        ("remove", "stop and unregister an app (admin)"),
    ):
        q = v.add_parser(verb, help=text)
        q.add_argument("name", type=ident, help="app name")
        add_common(q)
    q = v.add_parser("logs", help="the last lines of an app's log; -f follows new lines until Ctrl-C")
    q.add_argument("name", type=ident, help="app name")
    q.add_argument(
        "-n", "--lines", type=int, default=None, help="lines of history (default 100; 0 with -f: only new lines)"
    )
    q.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    q.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its time and stream")
    add_common(q)
    q = v.add_parser(
        "register",
        help="register an app (admin): --python SCRIPT, --node SCRIPT, -- ARGV..., or --spec FILE",
        description="Register an app on the host. The command runs without a shell: give a script "
        "(--python/--node, arguments after --) or an argv after --, or a whole AppSpec as JSON with --spec.",
    )
    q.add_argument("name", help="app name ([A-Za-z0-9_-])")
    q.add_argument("argv", nargs="*", help="program and arguments (after --), or the script's arguments")
    how = q.add_mutually_exclusive_group()
    how.add_argument("--python", metavar="SCRIPT", help="absolute path of a Python script")
    how.add_argument("--node", metavar="SCRIPT", help="absolute path of a Node.js script")
    how.add_argument("--spec", metavar="FILE", help="a JSON file with the whole AppSpec")
    q.add_argument("--interpreter", help="interpreter path or name (default python3 / node)")
    q.add_argument("--cwd", help="working directory (absolute)")
    q.add_argument("--user", help="run as this user")
    q.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment variable (repeatable; secrets better in --env-file)",
    )
    q.add_argument("--env-file", metavar="FILE", help="KEY=VALUE lines (values stay off the command line)")
    q.add_argument("--backend", choices=("process", "systemd"), default="process")
    q.add_argument("--restart", choices=("always", "on-failure", "never"), default="on-failure")
    q.add_argument("--description", default="")
    q.add_argument("--no-boot", action="store_true", help="do not start it when the host boots")
    q.add_argument("--start", action="store_true", help="start it right away")
    q.add_argument("--replace", action="store_true", help="replace an existing app of that name")
    add_common(q)
    p.set_defaults(func=apps, verb=None, lines=None, follow=False, timestamps=False)
