"""Whether a TCP port on 127.0.0.1 can be listened on, and which program holds it if not.

`fleetwatch dev` checks the ports it saved in `.fleetwatch/stack.json` before starting anything,
so a port another program took since the last run is named in one sentence instead of
nats-server's or PostgreSQL's fatal bind error, repeated on every restart.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        # As the servers themselves bind: SO_REUSEADDR, so the TIME_WAIT connections a server
        # stopped a moment ago leaves behind do not count as "taken"; a listener still does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class Owner:
    pid: int | None
    name: str = ""
    cmdline: tuple[str, ...] = ()
    environ: tuple[str, ...] = ()  # "K=V" entries, when readable

    def __str__(self) -> str:
        if self.pid is None:
            return "another program"
        return f"{self.name or 'a process'} (pid {self.pid})"

    def mentions(self, text: str) -> bool:
        """Whether `text` (a state directory) appears in its command line or environment."""
        return any(text in part for part in (*self.cmdline, *self.environ))


def port_owner(port: int) -> Owner:
    """The process listening on `port`. psutil sees another user's sockets only as root (and on
    some systems not at all): then the owner is unknown, "another program"."""
    try:
        import psutil
    except ImportError:
        return Owner(None)
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return Owner(None)
    pids = [c.pid for c in conns if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN]
    pid = next((p for p in pids if p), None)
    if pid is None:
        return Owner(None)
    try:
        proc = psutil.Process(pid)
        name = proc.name()
        cmdline = tuple(proc.cmdline())
    except psutil.Error:
        return Owner(pid)
    try:
        environ = tuple(f"{k}={v}" for k, v in proc.environ().items())
    except psutil.Error:
        environ = ()
    return Owner(pid, name, cmdline, environ)
