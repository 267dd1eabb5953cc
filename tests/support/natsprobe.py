"""Core NATS delivery checks for permission tests."""

from __future__ import annotations

import time

import nats


async def delivered(publisher, sub, subject: str, data: bytes, seconds: float = 15.0) -> bool:
    """Publish `data` on `subject` until `sub` receives it (or `seconds` pass). Core NATS is
    at-most-once: on the suite's long-lived, shared server a publish in flight while the
    publisher reconnects is gone, which says nothing about whether `sub` may receive it."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        await publisher.publish(subject, data)
        await publisher.flush()
        try:
            msg = await sub.next_msg(timeout=0.5)
        except nats.errors.TimeoutError:
            continue
        if msg.data == data:
            return True
    return False
