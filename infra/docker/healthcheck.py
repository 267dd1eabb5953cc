"""Container health check, standard library only (it runs in every image).

    healthcheck.py --nats                 the service holds an established TCP connection to one
                                          of the NATS servers in FLEETWATCH_NATS_URL
    healthcheck.py --gateway              the gateway's /healthz answers 200, over HTTPS when
                                          FLEETWATCH_GATEWAY_TLS_CERT is set (the gateway's own
                                          settings: host, port, certificate)
    healthcheck.py --http URL             URL answers 200

Exit 0 healthy, 1 not. A service that lost NATS reconnects by itself; while it cannot, the
container reports unhealthy instead of looking fine.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.parse
import urllib.request
from pathlib import Path

ESTABLISHED = "01"


def nats_ports(url_setting: str) -> set[int]:
    ports = set()
    for u in filter(None, (x.strip() for x in url_setting.split(","))):
        p = urllib.parse.urlsplit(u if "://" in u else f"nats://{u}")
        ports.add(p.port or 4222)
    return ports


def established_remote_ports(proc_net: Path = Path("/proc/net")) -> set[int]:
    """Remote ports of established TCP connections in this network namespace."""
    ports: set[int] = set()
    for name in ("tcp", "tcp6"):
        f = proc_net / name
        if not f.exists():
            continue
        for line in f.read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) > 3 and cols[3] == ESTABLISHED:
                ports.add(int(cols[2].rsplit(":", 1)[1], 16))
    return ports


def nats_ok(env: dict[str, str], proc_net: Path = Path("/proc/net")) -> bool:
    return bool(
        nats_ports(env.get("FLEETWATCH_NATS_URL", "nats://127.0.0.1:4222")) & established_remote_ports(proc_net)
    )


def http_ok(url: str, timeout: float = 3.0, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as r:  # noqa: S310 - a local URL from the Dockerfile or the gateway's settings
            return r.status == 200
    except OSError:
        return False


def gateway_url(env: dict[str, str]) -> tuple[str, ssl.SSLContext | None]:
    """Where the gateway of these settings listens, seen from inside its container, and for
    HTTPS a context that trusts exactly the certificate it is configured to serve (the probe
    dials 127.0.0.1, which the certificate need not name; a different certificate fails)."""
    host = env.get("FLEETWATCH_GATEWAY_HOST", "127.0.0.1")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    port = env.get("FLEETWATCH_GATEWAY_PORT", "8080")
    cert = env.get("FLEETWATCH_GATEWAY_TLS_CERT", "")
    if not cert:
        return f"http://{host}:{port}/healthz", None
    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = False
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the trust anchor
    return f"https://{host}:{port}/healthz", ctx


def gateway_ok(env: dict[str, str]) -> bool:
    try:
        url, ctx = gateway_url(env)
    except (OSError, ssl.SSLError):  # certificate file missing or unreadable
        return False
    return http_ok(url, context=ctx)


def main(argv: list[str]) -> int:
    ok = True
    checked = False
    it = iter(argv)
    for arg in it:
        if arg == "--nats":
            checked = True
            ok = ok and nats_ok(dict(os.environ))
        elif arg == "--gateway":
            checked = True
            ok = ok and gateway_ok(dict(os.environ))
        elif arg == "--http":
            checked = True
            ok = ok and http_ok(next(it, ""))
        else:
            print(f"unknown argument {arg!r}", file=sys.stderr)
            return 2
    return 0 if checked and ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
