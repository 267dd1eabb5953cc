"""`audit [--host --user --action --since --until]`: who did what, newest first (operator)."""

from __future__ import annotations

import argparse
import datetime as dt
import time

from . import output
from .alerting import seconds
from .common import add_common, client, command, want_json


def point_in_time(text: str) -> float:
    """`2h` (ago), an ISO date/time (local unless it says otherwise), or unix seconds."""
    text = text.strip()
    try:
        return time.time() - seconds(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        v = float(text)
        if v > 1e8:
            return v
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: give 30m / 2h / 7d (ago), 2026-01-31, 2026-01-31T14:00, or unix seconds"
        ) from None


@command
def audit(args: argparse.Namespace) -> int:
    params = {
        "host": args.host,
        "actor": args.user,
        "action": args.action,
        "result": args.result,
        "from": args.since,
        "to": args.until,
        "limit": args.limit,
    }
    with client(args) as c:
        page = c.get("/api/v1/audit", params=params)
    if want_json(args):
        output.print_json(page)
        return 0
    rows = [
        (
            output.when(r["ts"]),
            r["actor"],
            r["host"],
            r["action"],
            r.get("target", ""),
            output.state(r.get("result")),
            r.get("code", ""),
            f"{r.get('duration_ms', 0):.0f}ms",
            r.get("error", ""),
        )
        for r in page.get("items", [])
    ]
    output.show(
        output.table(
            ("TIME", "USER", "HOST", "ACTION", "TARGET", "RESULT", "CODE", "TOOK", "ERROR"),
            rows,
            right=("CODE", "TOOK"),
        )
    )
    if page.get("next_offset") is not None:
        output.console().print(
            f"(more than {args.limit}: narrow with --since/--host/--user or raise --limit)", style="dim"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit", help="who did what on which host (operator): filter by --host, --user, --action, --since"
    )
    p.add_argument("--host", help="only this host")
    p.add_argument("--user", help="only this user (the audit's actor)")
    p.add_argument("--action", help="only this action, e.g. apps.restart")
    p.add_argument("--result", choices=("ok", "error"))
    p.add_argument(
        "--since",
        type=point_in_time,
        default=None,
        help="30m, 2h, 7d (ago), an ISO time, or unix seconds (default: 30 days)",
    )
    p.add_argument("--until", type=point_in_time, default=None, help="same forms as --since (default: now)")
    p.add_argument("--limit", type=int, default=100, help="rows (1-1000, default 100)")
    add_common(p)
    p.set_defaults(func=audit)
