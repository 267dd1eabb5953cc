"""`alerts` (what is pending or firing; `--history` for past state changes), `silence`
(list/add/rm), `checks` (HTTP health checks with their last results; add/rm), `rules`.

Live alert state, silences, checks and rules come from the alerter through the gateway
(`/api/v1/alerts`, `/silences`, `/checks`, `/rules`); history and check results from what ingest
stored (`/api/v1/alerts/history`, `/api/v1/events`)."""

from __future__ import annotations

import argparse
import re
import time

from . import output
from .common import add_common, client, command, ident, subparsers, want_json
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


def items(body, key: str) -> list[dict]:
    if isinstance(body, dict):
        body = body.get("items", body.get(key, []))
    return [x for x in body or [] if isinstance(x, dict)]


@command
def alerts(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.history:
            body = c.get(
                "/api/v1/alerts/history",
                params={"host": args.host, "rule": args.rule, "from": args.since, "limit": args.limit},
            )
        else:
            body = c.get("/api/v1/alerts", params={"all": "true" if args.all else None})
            if args.host or args.rule:  # the API has no filter here: narrow its answer, keep its shape
                body = {
                    **body,
                    "items": [
                        a
                        for a in alert_items(body)
                        if (not args.host or a.get("host") == args.host)
                        and (not args.rule or a.get("rule") == args.rule)
                    ],
                }
    if want_json(args):
        output.print_json(body)
        return 0
    recs = alert_items(body)
    now = time.time()
    if args.history:
        rows = [
            (
                output.when(a["ts"]),
                output.state(a.get("state")),
                a.get("severity", ""),
                a.get("rule", ""),
                a.get("host", ""),
                "-" if a.get("value") is None else f"{a['value']:g}",
                a.get("summary", ""),
            )
            for a in recs
        ]
        output.show(output.table(("TIME", "STATE", "SEVERITY", "RULE", "HOST", "VALUE", "SUMMARY"), rows))
        return 0
    rows = [
        (
            output.state(a.get("state")),
            a.get("severity", ""),
            a.get("rule", ""),
            a.get("host", ""),
            "-" if a.get("value") is None else f"{a['value']:g}",
            "-" if a.get("threshold") is None else f"{a['threshold']:g}",
            output.ago(a.get("since"), now),
            a.get("summary", ""),
        )
        for a in recs
    ]
    output.show(output.table(("STATE", "SEVERITY", "RULE", "HOST", "VALUE", "THRESHOLD", "SINCE", "SUMMARY"), rows))
    if not recs:
        output.console().print("no active alerts", style="dim")
    return 0


@command
def silence(args: argparse.Namespace) -> int:
    verb = args.verb or "list"
    with client(args) as c:
        if verb == "add":
            now = time.time()
            # an empty id: the alerter names the silence
            body = {
                "id": "",
                "matchers": args.matchers,
                "starts": now,
                "ends": now + args.duration,
                "comment": args.comment,
            }
            r = c.post("/api/v1/silences", body)
            if want_json(args):
                output.print_json(r)
            else:
                s = r
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
    rows = [
        (
            s.get("id", ""),
            ", ".join(f"{m['name']}{m.get('op', '=')}{m['value']}" for m in s.get("matchers", [])),
            "expired" if s.get("ends", 0) < now else f"until {output.when(s.get('ends'))}",
            s.get("created_by", ""),
            s.get("comment", ""),
        )
        for s in items(r, "silences")
    ]
    output.show(output.table(("ID", "MATCHERS", "ENDS", "BY", "COMMENT"), rows))
    return 0


@command
def checks(args: argparse.Namespace) -> int:
    verb = args.verb or "list"
    with client(args) as c:
        if verb == "add":
            body = {
                "url": args.url_to_check,
                "method": args.method,
                "interval_s": args.interval,
                "timeout_s": args.timeout,
                "status_min": args.status[0],
                "status_max": args.status[1],
                "failure_threshold": args.failures,
                "severity": args.severity,
            }
            r = c.request("PUT", f"/api/v1/checks/{args.name}", json_body=body)
            if want_json(args):
                output.print_json(r)
            else:
                print(f"check {r['name']}: {r['method']} {r['url']} every {output.duration(r['interval_s'])}")
            return 0
        if verb == "rm":
            r = c.delete(f"/api/v1/checks/{args.name}")
            print(f"check {args.name} removed")
            return 0
        configured = items(c.get("/api/v1/checks"), "checks")
        results = c.get("/api/v1/events", params={"kind": "health", "limit": 500})
    last: dict[str, dict] = {}
    for e in results.get("items", []):  # newest first
        last.setdefault(e["data"].get("check_name", ""), {**e["data"], "ts": e["ts"]})
    if want_json(args):
        output.print_json({"items": configured, "last_results": last})
        return 0
    rows = []
    for ch in configured:
        r = last.get(ch["name"], {})
        ok = r.get("ok")
        rows.append(
            (
                ch["name"],
                f"{ch.get('method', 'GET')} {ch.get('url', '')}",
                output.duration(ch.get("interval_s")),
                output.state("-" if ok is None else ("ok" if ok else "failed")),
                r.get("status_code") or "-",
                "-" if r.get("latency_ms") is None else f"{r['latency_ms']:.0f}ms",
                r.get("consecutive_failures", "-"),
                output.ago(r.get("ts")),
                r.get("error", "") or ("" if ch.get("enabled", True) else "disabled"),
            )
        )
    output.show(
        output.table(
            ("CHECK", "TARGET", "EVERY", "LAST", "HTTP", "LATENCY", "FAILS", "WHEN", "ERROR"),
            rows,
            right=("HTTP", "LATENCY", "FAILS"),
        )
    )
    return 0


@command
def rules(args: argparse.Namespace) -> int:
    with client(args) as c:
        body = c.get("/api/v1/rules")
    if want_json(args):
        output.print_json(body)
        return 0
    rows = []
    for r in items(body, "rules"):
        if r.get("kind", "metric") == "metric":
            cond = f"{r.get('field')} {r.get('op')} {r.get('threshold'):g}" + (
                f" (resolve {r['resolve']:g})" if r.get("resolve") is not None else ""
            )
        elif r.get("kind") == "host_down":
            cond = f"no frame for {r.get('missed_intervals', 3):g} intervals"
        elif r.get("kind") == "app":
            cond = "app " + "/".join(r.get("states") or [])
        else:
            cond = "replication failed"
        rows.append(
            (
                r["name"],
                r.get("kind", ""),
                cond,
                output.duration(r.get("for_s")),
                r.get("severity", ""),
                ",".join(r.get("hosts") or []) or "all",
                "" if r.get("enabled", True) else "disabled",
            )
        )
    output.show(output.table(("RULE", "KIND", "CONDITION", "FOR", "SEVERITY", "HOSTS", ""), rows))
    return 0


def status_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        return (int(lo), int(hi if sep else lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a status or a range like 200-299") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alerts", help="alerts pending or firing now (--all: also resolved; --history: past changes)")
    p.add_argument("--host", help="only this host")
    p.add_argument("--rule", help="only this rule")
    p.add_argument("--all", action="store_true", help="include resolved and inactive alerts")
    p.add_argument("--history", action="store_true", help="state changes as stored, newest first")
    p.add_argument(
        "--since",
        type=lambda t: time.time() - seconds(t),
        default=None,
        help="with --history: how far back (30m, 2h, 7d; default 7d)",
    )
    p.add_argument("--limit", type=int, default=100, help="with --history: rows (default 100)")
    add_common(p)
    p.set_defaults(func=alerts)

    p = sub.add_parser("silence", help="silences: list, add MATCHER... --for 2h, rm ID")
    add_common(p)
    v = subparsers(p, "verb")
    q = v.add_parser("list", help="silences (the default)")
    add_common(q)
    q = v.add_parser(
        "add",
        help="silence alerts matching every MATCHER (name=value, name!=value, name=~regex, name!~regex) (operator)",
    )
    q.add_argument("matchers", nargs="+", type=matcher, metavar="MATCHER")
    q.add_argument(
        "--for", dest="duration", type=seconds, default=3600.0, help="how long (90s, 30m, 2h, 1d; default 1h)"
    )
    q.add_argument("--comment", default="", help="why")
    add_common(q)
    q = v.add_parser("rm", help="end a silence now (operator)")
    q.add_argument("id", type=ident)
    add_common(q)
    p.set_defaults(func=silence, verb=None)

    p = sub.add_parser("checks", help="HTTP health checks and their last results; add, rm")
    add_common(p)
    v = subparsers(p, "verb")
    q = v.add_parser("list", help="checks and their last result (the default)")
    add_common(q)
    q = v.add_parser("add", help="add or replace a check (operator)")
    q.add_argument("name", type=ident)
    q.add_argument("url_to_check", metavar="URL")
    q.add_argument("--method", default="GET")
    q.add_argument("--interval", type=seconds, default=60.0, help="how often (default 60s)")
    q.add_argument("--timeout", type=seconds, default=5.0, help="per request (default 5s)")
    q.add_argument(
        "--status", type=status_range, default=(200, 299), help="accepted HTTP status or range (default 200-299)"
    )
    q.add_argument("--failures", type=int, default=2, help="failures in a row before it alerts (default 2)")
    q.add_argument("--severity", choices=("info", "warning", "critical"), default="critical")
    add_common(q)
    q = v.add_parser("rm", help="delete a check (operator)")
    q.add_argument("name", type=ident)
    add_common(q)
    p.set_defaults(func=checks, verb=None)

    p = sub.add_parser("rules", help="alert rules (built-in and stored)")
    add_common(p)
    p.set_defaults(func=rules)
