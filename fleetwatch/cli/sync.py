"""`sync HOST`: replicate the central users to a host now (its replicator), and `sync --status`
for the last replication of every host."""

from __future__ import annotations

import argparse

from . import output
from .common import add_common, client, command, ident, want_json


def status_rows(items: list[dict]) -> list[tuple]:
    return [
        (
            s["host"],
            output.state("ok" if s.get("ok") else "failed"),
            s.get("trigger", ""),
            s.get("added", 0),
            s.get("updated", 0),
            s.get("removed", 0),
            s.get("total", 0),
            f"{s.get('duration_ms', 0):.0f}ms",
            output.ago(s.get("ts")),
            s.get("error", ""),
        )
        for s in items
    ]


COLUMNS = ("HOST", "RESULT", "TRIGGER", "ADDED", "UPDATED", "REMOVED", "USERS", "TOOK", "WHEN", "ERROR")


@command
def sync(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.host is None:
            r = c.get("/api/v1/replication")
            if want_json(args):
                output.print_json(r)
            else:
                output.show(
                    output.table(
                        COLUMNS, status_rows(r.get("items", [])), right=("ADDED", "UPDATED", "REMOVED", "USERS", "TOOK")
                    )
                )
            return 0
        if args.no_wait:
            r = c.post(f"/api/v1/hosts/{args.host}/replication/sync", params={"wait": "false"})
        else:
            r = c.post(
                f"/api/v1/hosts/{args.host}/replication/sync",
                params={"timeout": args.timeout},
                timeout=args.timeout + 15,
            )
    if want_json(args):
        output.print_json(r)
        return 0 if r.get("ok", True) else 1
    if args.no_wait:
        print(f"sync of {args.host} requested")
        return 0
    output.show(output.table(COLUMNS, status_rows([r]), right=("ADDED", "UPDATED", "REMOVED", "USERS", "TOOK")))
    return 0 if r.get("ok") else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="replicate the central users to HOST now (no HOST: last replication of every host)")
    p.add_argument("host", nargs="?", metavar="HOST", type=ident, help="host id")
    p.add_argument("--no-wait", action="store_true", help="ask for the sync and return at once")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the sync (default 60)")
    add_common(p)
    p.set_defaults(func=sync)
