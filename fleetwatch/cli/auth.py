"""`login`, `logout`, `whoami`, `tokens` (API tokens for scripts and CI)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import config, output
from .client import Client, CliError
from .common import add_common, client, command, ident, read_secret, subparsers, want_json


@command
def login(args: argparse.Namespace) -> int:
    url = config.resolve_url(getattr(args, "url", None))
    username = args.username
    if not username:
        if not sys.stdin.isatty() or args.password_stdin:
            raise CliError("give --username when the password comes from stdin")
        username = input("Username: ").strip()
    ca_file = str(Path(args.ca_file).resolve()) if args.ca_file else config.resolve_ca(url)
    password = read_secret(f"Password for {username}@{url}: ", from_stdin=args.password_stdin)
    with Client(url, ca_file=ca_file) as c:
        r = c.post("/api/v1/auth/login", {"username": username, "password": password})
    path = config.save(
        config.Credentials(
            url=url,
            token=r["token"],
            username=r["username"],
            role=r["role"],
            expires_at=r.get("expires_at"),
            ca_file=ca_file,
        )
    )
    if want_json(args):
        output.print_json(
            {
                "username": r["username"],
                "role": r["role"],
                "expires_at": r.get("expires_at"),
                "url": url,
                "credentials": str(path),
            }
        )
    else:
        print(
            f"logged in to {url} as {r['username']} ({r['role']}), session until {output.when(r.get('expires_at'))}; saved in {path}"
        )
    return 0


@command
def logout(args: argparse.Namespace) -> int:
    removed = config.remove()
    print("logged out" if removed else "not logged in")
    return 0


@command
def whoami(args: argparse.Namespace) -> int:
    with client(args) as c:
        me = c.get("/api/v1/auth/me")
    if want_json(args):
        output.print_json(me)
    else:
        print(f"{me['username']} ({me['role']}) via {me['via']} at {c.url}")
    return 0


@command
def tokens(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.verb == "create":
            body = {
                "name": args.name,
                **({"role": args.role} if args.role else {}),
                **({"expires_in_s": int(args.expires_days * 86400)} if args.expires_days else {}),
            }
            t = c.post("/api/v1/auth/tokens", body)
            if want_json(args):
                output.print_json(t)
            else:
                # The only time the token is shown: to stdout, for the caller to store.
                print(t["token"])
                print(
                    f"token {t['id']} ({t['role']}) created; it is not shown again. Use it as FLEETWATCH_TOKEN.",
                    file=sys.stderr,
                )
            return 0
        if args.verb == "revoke":
            c.delete(f"/api/v1/auth/tokens/{args.id}")
            print(f"token {args.id} revoked")
            return 0
        items = c.get("/api/v1/auth/tokens")
    if want_json(args):
        output.print_json(items)
        return 0
    rows = [
        (
            t["id"],
            t["name"],
            t["username"],
            t["role"],
            output.when(t["created_at"]),
            output.when(t.get("expires_at")) if t.get("expires_at") else "never",
            output.ago(t.get("last_used_at")),
            "revoked" if t["revoked"] else "",
        )
        for t in items
    ]
    output.show(output.table(("ID", "NAME", "USER", "ROLE", "CREATED", "EXPIRES", "LAST USED", ""), rows))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "login",
        help="log in to the gateway; the session token is saved (0600) for later commands",
        description="Log in with your fleetwatch username and password. The password is asked without echo, "
        "or read from the first line of stdin with --password-stdin; it is never an argument. "
        "The token is saved in $XDG_CONFIG_HOME/fleetwatch/credentials.json (mode 0600).",
    )
    p.add_argument("-u", "--username", default="", help="username (asked when not given)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument(
        "--ca-file",
        default="",
        help="CA certificate of an https gateway (ca.crt of `fleetwatch certs`); saved with the login",
    )
    add_common(p)
    p.set_defaults(func=login)

    p = sub.add_parser("logout", help="forget the saved session token")
    p.set_defaults(func=logout)

    p = sub.add_parser("whoami", help="who the gateway says you are, and your role")
    add_common(p)
    p.set_defaults(func=whoami)

    p = sub.add_parser("tokens", help="API tokens for automation: list, create, revoke")
    add_common(p)
    v = subparsers(p, "verb")
    q = v.add_parser("list", help="your tokens (everyone's for an admin)")
    add_common(q)
    q = v.add_parser("create", help="create a token (printed once, on stdout)")
    q.add_argument("name", help="what the token is for, e.g. ci-deploy")
    q.add_argument("--role", choices=("viewer", "operator", "admin"), help="at most your own role (default: yours)")
    q.add_argument("--expires-days", type=float, default=None, help="expire after this many days (default: never)")
    add_common(q)
    q = v.add_parser("revoke", help="revoke a token by id")
    q.add_argument("id", type=ident)
    add_common(q)
    p.set_defaults(func=tokens, verb="list")
