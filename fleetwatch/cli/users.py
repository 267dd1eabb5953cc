"""`users` (admin): list, add, passwd, deactivate, activate, role. Passwords are asked without
echo (twice) or read from stdin with --password-stdin; never taken from the command line."""

from __future__ import annotations

import argparse

from . import output
from .common import add_common, client, command, ident, read_secret, subparsers, want_json


def show_users(users: list[dict]) -> None:
    rows = [
        (
            u["username"],
            u.get("role", ""),
            output.state("active" if u.get("is_active") else "inactive"),
            u.get("system_uid", ""),
            u.get("shell", ""),
            u.get("home", ""),
            u.get("email", ""),
        )
        for u in users
    ]
    output.show(output.table(("USER", "ROLE", "STATE", "UID", "SHELL", "HOME", "EMAIL"), rows, right=("UID",)))


@command
def users(args: argparse.Namespace) -> int:
    verb = args.verb or "list"
    with client(args) as c:
        if verb == "list":
            r = c.get("/api/v1/users", params={"active": None if args.all else "true"})
            if want_json(args):
                output.print_json(r)
            else:
                show_users(r)
            return 0
        if verb == "add":
            body: dict = {"username": args.username, "role": args.role}
            if not args.no_password:
                body["password"] = read_secret(
                    f"Password for {args.username}: ", from_stdin=args.password_stdin, confirm=True
                )
            for k in ("email", "shell", "home"):
                if getattr(args, k):
                    body[k] = getattr(args, k)
            if args.uid:
                body["system_uid"] = args.uid
            r = c.post("/api/v1/users", body)
            done = "created"
        elif verb == "passwd":
            pw = read_secret(f"New password for {args.username}: ", from_stdin=args.password_stdin, confirm=True)
            r = c.patch(f"/api/v1/users/{args.username}", {"password": pw})
            done = "password changed"
        elif verb == "deactivate":
            r = c.delete(f"/api/v1/users/{args.username}")
            done = "deactivated (can no longer log in; removed from the hosts at their next sync)"
        elif verb == "activate":
            r = c.patch(f"/api/v1/users/{args.username}", {"is_active": True})
            done = "activated"
        else:  # role
            r = c.patch(f"/api/v1/users/{args.username}", {"role": args.role})
            done = f"role is now {args.role}"
    if want_json(args):
        output.print_json(r)
    else:
        print(f"{r['username']}: {done}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="central user accounts (admin): list, add, passwd, deactivate, activate, role")
    add_common(p)
    v = subparsers(p, "verb")
    q = v.add_parser("list", help="active users (the default; --all for every user)")
    q.add_argument("--all", action="store_true", help="include deactivated users")
    add_common(q)
    q = v.add_parser("add", help="create a user; the password is asked (or --password-stdin)")
    q.add_argument("username", help="POSIX login name")
    q.add_argument("--role", choices=("viewer", "operator", "admin"), default="viewer")
    q.add_argument("--email", default="")
    q.add_argument("--shell", default="", help="login shell on the hosts (default /bin/bash)")
    q.add_argument("--home", default="", help="home directory on the hosts")
    q.add_argument("--uid", type=int, default=0, help="system uid (default: allocated)")
    q.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    q.add_argument(
        "--no-password", action="store_true", help="create without a password (cannot log in until one is set)"
    )
    add_common(q)
    q = v.add_parser("passwd", help="set a user's password (asked, or --password-stdin)")
    q.add_argument("username", type=ident)
    q.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add_common(q)
    for verb, text in (
        ("deactivate", "deactivate a user (the row stays; uids are never reused)"),
        ("activate", "activate a user again"),
    ):
        q = v.add_parser(verb, help=text)
        q.add_argument("username", type=ident)
        add_common(q)
    q = v.add_parser("role", help="change a user's role")
    q.add_argument("username", type=ident)
    q.add_argument("role", choices=("viewer", "operator", "admin"))
    add_common(q)
    p.set_defaults(func=users, verb=None, all=False)
