"""One sentence for "the server is not there", shared by the gateway commands and `simulate`.

The exception a client library raises names its own layers (`httpx.ConnectError: [Errno 111]
Connection refused`, `nats: no servers available for connection`); the operator needs the
address, the operating system's reason and what to check next."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def os_reason(exc: BaseException) -> str:
    """The operating system's words for why a connection failed ("connection refused"), from
    the first OSError in the exception's chain; else the exception's own text."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, TimeoutError):
            return "timed out"
        if isinstance(cur, OSError) and (cur.strerror or cur.errno):
            # asyncio's refusal carries "Connect call failed (...)" as its text; errno says it plainly.
            text = os.strerror(cur.errno) if isinstance(cur.errno, int) and cur.errno > 0 else str(cur.strerror)
            return text[:1].lower() + text[1:]
        cur = cur.__cause__ or cur.__context__
    text = str(exc).strip()
    if text.startswith("[Errno") and "] " in text:
        text = text.split("] ", 1)[1]
    return text or type(exc).__name__


def is_local(url: str) -> bool:
    """Whether every server of a (comma-separated) URL is on this machine: then the dev stack
    (`make run`) is what should be listening."""
    hosts = {urlsplit(u.strip() if "://" in u else f"//{u.strip()}").hostname for u in url.split(",") if u.strip()}
    return bool(hosts) and hosts <= LOCAL_HOSTS


def unreachable(what: str, url: str, reason: str, settings: str) -> str:
    """`cannot reach the gateway at URL (connection refused); is `make run` up? ...`"""
    hint = "is `make run` up?" if is_local(url) else "is it running, and is that the right address?"
    return f"cannot reach {what} at {url} ({reason}); {hint} (set {settings} to use another)"
