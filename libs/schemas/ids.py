"""Host ids are single NATS tokens, so a host can never address another host's subjects."""

from __future__ import annotations

import re

HOST_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# App and check names travel as subject tokens too (fleet.logs.<host>.<app>).
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class InvalidId(ValueError):
    """An identifier that cannot be used as a subject token."""


def check_host_id(host: str) -> str:
    if not isinstance(host, str) or not HOST_ID_RE.match(host):
        raise InvalidId(f"invalid host id {host!r}: expected 1-64 characters of [A-Za-z0-9_-]")
    return host


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidId(f"invalid {what} {name!r}: expected 1-64 characters of [A-Za-z0-9_-]")
    return name


def host_id_from_hostname(hostname: str) -> str:
    """`web-1.example.com` -> `web-1-example-com`; anything else outside the token alphabet -> `_`."""
    hid = hostname.strip().replace(".", "-")
    hid = re.sub(r"[^A-Za-z0-9_-]", "_", hid)[:64]
    return check_host_id(hid or "localhost")
