"""`fleetwatch <command>`: each command lives in its own module with `register(subparsers)`.

Exit codes scripts can trust: 0 ok, 1 refused or failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

# Adding a command = adding its module here.
COMMAND_MODULES = [
    "fleetwatch.natsconfig",
    "fleetwatch.devstack",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetwatch", description="Monitoring and control for a fleet of Linux hosts.")
    parser.add_argument("--version", action="version", version=f"fleetwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
