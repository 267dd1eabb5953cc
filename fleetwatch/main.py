"""`fleetwatch <command>`: each command lives in its own module with `register(subparsers)`.

Exit codes scripts can trust: 0 ok, 1 refused or failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__


def command_modules() -> list[str]:
    """Every module of this package with a `register(subparsers)`: adding a command is adding a module."""
    import pkgutil

    import fleetwatch

    return [
        f"fleetwatch.{m.name}"
        for m in sorted(pkgutil.iter_modules(fleetwatch.__path__), key=lambda m: m.name)
        if m.name not in ("main", "__main__")
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetwatch",
        description="Monitoring and control for a fleet of Linux hosts.",
        epilog="Fleet commands (login ... completion) talk to the gateway: FLEETWATCH_URL, and the token of "
        "`fleetwatch login` or FLEETWATCH_TOKEN. The others (certs, dev, nats-config, simulate, ...) are for "
        "development and maintenance. `fleetwatch COMMAND -h` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"fleetwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # A module's ORDER places its commands in the help (fleet commands first); default: by name.
    mods = [importlib.import_module(name) for name in command_modules()]
    for mod in sorted(mods, key=lambda m: getattr(m, "ORDER", 100)):
        if hasattr(mod, "register"):
            mod.register(sub)
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
