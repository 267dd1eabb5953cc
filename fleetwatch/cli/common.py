"""What every fleet command shares: `--url`/`--json` at any level, a client built from them, and
one place that turns failures into a message on stderr and exit status 1."""

from __future__ import annotations

import argparse
import functools
import getpass
import os
import re
import sys
from collections.abc import Callable

from .client import Client, CliError
from .config import ConfigError, resolve_ca, resolve_token, resolve_url


def add_common(p: argparse.ArgumentParser, *, json_flag: bool = True) -> argparse.ArgumentParser:
    # SUPPRESS: a subcommand's parser must not reset what an outer level already set
    # (`fleetwatch apps --json HOST` and `fleetwatch apps HOST --json` both work).
    g = p.add_argument_group("gateway")
    g.add_argument(
        "--url", default=argparse.SUPPRESS, help="gateway URL (default: FLEETWATCH_URL, then the saved login)"
    )
    if json_flag:
        g.add_argument(
            "--json",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print the API's JSON answer instead of a table",
        )
    return p


class ArgvParser(argparse.ArgumentParser):
    """Everything after `--` is the command line to run (`argv`), wherever the options are:
    `apps HOST register web --env-file f -- python3 app.py --port 8000`."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        if "--" in args and any(a.dest == "argv" for a in self._actions):
            i = args.index("--")
            ns, extras = super().parse_known_args(args[:i], namespace)
            ns.argv = list(getattr(ns, "argv", None) or []) + args[i + 1 :]
            return ns, extras
        return super().parse_known_args(args, namespace)


def subparsers(p: argparse.ArgumentParser, dest: str, *, required: bool = False) -> argparse._SubParsersAction:
    return p.add_subparsers(dest=dest, metavar=dest.upper(), required=required, parser_class=ArgvParser)


_IDENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def ident(text: str) -> str:
    """A host id, app, user, job, check or silence name: one path segment of the API's URLs,
    so never `..` or a `/` that would reach another route."""
    if not _IDENT.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid name (letters, digits, _ . -)")
    return text


def want_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def client(args: argparse.Namespace, *, auth: bool = True) -> Client:
    url = resolve_url(getattr(args, "url", None))
    token = resolve_token(url) if auth else ""
    return Client(url, token, ca_file=resolve_ca(url))


def fail(message: str) -> int:
    print(f"fleetwatch: error: {message}", file=sys.stderr)
    return 1


def command(fn: Callable[[argparse.Namespace], int | None]) -> Callable[[argparse.Namespace], int]:
    """Run a command; a refusal or failure is one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args) or 0)
        except CliError as exc:
            print(f"fleetwatch: error: {exc}", file=sys.stderr)
            return exc.code
        except ConfigError as exc:
            return fail(str(exc))
        except BrokenPipeError:
            # `fleetwatch ... | head`: the reader is gone, which is not our failure.
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), sys.stdout.fileno())
            return 0

    return run


def read_secret(prompt: str, *, from_stdin: bool, confirm: bool = False) -> str:
    """A password from a terminal prompt that does not echo, or the first line of stdin
    (`--password-stdin`); never from the command line, where `ps` and shell history see it."""
    if from_stdin:
        line = sys.stdin.readline()
        secret = line.rstrip("\r\n")
        if not secret:
            raise CliError("no password on stdin")
        return secret
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask the password on: pipe it in with --password-stdin")
    secret = getpass.getpass(prompt)
    if not secret:
        raise CliError("empty password")
    if confirm and getpass.getpass("Again: ") != secret:
        raise CliError("the passwords differ")
    return secret
