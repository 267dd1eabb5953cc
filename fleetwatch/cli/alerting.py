"""`alerts` (what is firing), `silence` (list/add/rm), `checks` (HTTP health checks and their
last results).

Active alerts, silences and checks come from the gateway's alerting routes (`/api/v1/alerts`,
`/api/v1/silences`, `/api/v1/checks`, backed by the alerter). Where a gateway has no such route
yet, `alerts` and `checks` fall back to the stored history (`/api/v1/events`) and say so."""

from __future__ import annotations

import argparse
import re
import sys
import time

from . import output
from .client import CliError, Client
from .common import add_common, client, command, subparsers, want_json
from .hosts import alert_items

_MATCHER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(=~|!~|!=|=)(.*)$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def seconds(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 2h, 1d")
    return float(m.group(1)) * UNITS[m.group(2)]


def matcher(text: str) -> dict:
    m = _MATCHER.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a matcher like host=web-1, rule=~cpu.*, severity!=info")
    return {"name": m.group(1), "op": m.group(2), "value": m.group(3)}


def route_missing(exc: CliError) -> bool:
    return exc.status in (404, 405)


def items(body, key: str) -> list[dict]:
    if isinstance(body, dict):
        body = body.get(key, body.get("items", []))
    return [x for x in body or [] if isinstance(x, dict)]


@command
def alerts(args: argparse.Namespace) -> int:
    with client(args) as c:
        try:
            body = c.get("/api/v1/alerts", params={"include_inactive": "true" if args.all else None, "host": args.host})
        except CliError as exc:
            if not route_missing(exc):
                raise
            return alert_history(c, args)
    if want_json(args):
        output.print_json(body)
        return 0
    recs = alert_items(body)
    if args.host:
        recs = [a for a in recs if a.get("host") == args.host]
    now = time.time()
    rows = [(output.state(a.get("state")), a.get("severity", ""), a.get("rule", ""), a.get("host", ""), "-" if a.get("value") is None else f"{a['value']:g}",
             output.ago(a.get("since"), now), a.get("summary", "")) for a in recs]
    output.show(output.table(("STATE", "SEVERITY", "RULE", "HOST", "VALUE", "SINCE", "SUMMARY"), rows))
    if not recs:
        output.console().print("no active alerts", style="dim")
    return 0


def alert_history(c: Client, args: argparse.Namespace) -> int:
    body = c.get("/api/v1/events", params={"kind": "alert", "host": args.host, "limit": 100})
    if want_json(args):
        output.print_json(body)
        return 0
    print("(this gateway has no /api/v1/alerts: recent alert events from history instead)", file=sys.stderr)
    rows = [(output.when(e["ts"]), output.state(e["data"].get("state")), e["data"].get("severity", ""), e["data"].get("rule", ""), e["host"],
             e["data"].get("summary", "")) for e in body.get("items", [])]
    output.show(output.table(("TIME", "STATE", "SEVERITY", "RULE", "HOST", "SUMMARY"), rows))
    return 0


@command
def silence(args: argparse.Namespace) -> int:
    verb = args.verb or "list"
    with client(args) as c:
        if verb == "add":
            now = time.time()
            body = {"matchers": args.matchers, "starts": now, "ends": now + args.duration, "comment": args.comment}
            r = c.post("/api/v1/silences", body)
            if want_json(args):
                output.print_json(r)
            else:
                s = (items(r, "silences") or [r])[0]
                print(f"silence {s.get('id', '?')} until {output.when(s.get('ends', body['ends']))}")
            return 0
        if verb == "rm":
            c.delete(f"/api/v1/silences/{args.id}")
            print(f"silence {args.id} removed")
            return 0
        r = c.get("/api/v1/silences")
    if want_json(args):
        output.print_json(r)
        return 0
    now = time.time()
    rows = [(s.get("id", ""), ", ".join(f"{m['name']}{m.get('op', '=')}{m['value']}" for m in s.get("matchers", [])),
             "expired" if s.get("ends", 0) < now else f"until {output.when(s.get('ends'))}", s.get("created_by", ""), s.get("comment", ""))
            for s in items(r, "silences")]
    output.show(output.table(("ID", "MATCHERS", "ENDS", "BY", "COMMENT"), rows))
    return 0


@command
def checks(args: argparse.Namespace) -> int:
    with client(args) as c:
        try:
            configured = items(c.get("/api/v1/checks"), "checks")
        except CliError as exc:
            if not route_missing(exc):
                raise
            configured = None
        results = c.get("/api/v1/events", params={"kind": "health", "limit": 500})
    last: dict[str, dict] = {}
    for e in results.get("items", []):  # newest first
        last.setdefault(e["data"].get("check_name", ""), {**e["data"], "ts": e["ts"]})
    if want_json(args):
        output.print_json({"checks": configured, "last_results": last})
        return 0
    names = [ch["name"] for ch in configured] if configured is not None else sorted(last)
    conf = {ch["name"]: ch for ch in configured or []}
    rows = []
    for n in names:
        r, ch = last.get(n, {}), conf.get(n, {})
        ok = r.get("ok")
        rows.append((n, ch.get("url") or r.get("target", ""), output.duration(ch.get("interval_s")) if ch else "-",
                     output.state("-" if ok is None else ("ok" if ok else "failed")), r.get("status_code") or "-",
                     "-" if r.get("latency_ms") is None else f"{r['latency_ms']:.0f}ms", r.get("consecutive_failures", "-"),
                     output.ago(r.get("ts")), r.get("error", "")))
    output.show(output.table(("CHECK", "TARGET", "EVERY", "LAST", "HTTP", "LATENCY", "FAILS", "WHEN", "ERROR"), rows, right=("HTTP", "LATENCY", "FAILS")))
    if configured is None:
        print("(this gateway has no /api/v1/checks: checks seen in the results history)", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alerts", help="alerts firing now (with --all, also pending and resolved)")
    p.add_argument("--host", help="only this host")
    p.add_argument("--all", action="store_true", help="include pending and recently resolved alerts")
    add_common(p)
    p.set_defaults(func=alerts)

    p = sub.add_parser("silence", help="silences: list, add MATCHER... --for 2h, rm ID")
    add_common(p)
    v = subparsers(p, "verb")
    q = v.add_parser("list", help="silences (the default)")
    add_common(q)
    q = v.add_parser("add", help="silence alerts matching every MATCHER (name=value, name!=value, name=~regex, name!~regex)")
    q.add_argument("matchers", nargs="+", type=matcher, metavar="MATCHER")
    q.add_argument("--for", dest="duration", type=seconds, default=3600.0, help="how long (90s, 30m, 2h, 1d; default 1h)")
    q.add_argument("--comment", default="", help="why")
    add_common(q)
    q = v.add_parser("rm", help="end a silence now")
    q.add_argument("id")
    add_common(q)
    p.set_defaults(func=silence, verb=None)

    p = sub.add_parser("checks", help="HTTP health checks and their last results")
    add_common(p)
    p.set_defaults(func=checks)
