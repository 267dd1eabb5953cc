"""Messages that fail to decode are quarantined, never dropped silently and never fatal."""

from __future__ import annotations

import logging

from nats.aio.client import Client as NATS

from libs.schemas import subjects
from libs.schemas.codec import DecodeError
from libs.schemas.streams import H_PATH, H_REASON, H_SUBJECT

log = logging.getLogger("fleetwatch.deadletter")


async def send(nc: NATS, service: str, subject: str, data: bytes, reason: str | Exception) -> None:
    path = reason.path if isinstance(reason, DecodeError) else ""
    text = str(reason)[:1000]
    headers = {H_REASON: text.replace("\n", " "), H_SUBJECT: subject}
    if path:
        headers[H_PATH] = path
    log.warning("dead-lettered message", extra={"subject": subject, "reason": text, "bytes": len(data)})
    try:
        js = nc.jetstream()
        await js.publish(subjects.deadletter(service), data, headers=headers, timeout=5)
    except Exception as exc:  # the quarantine itself failing must not take the service down
        log.error("could not publish dead letter: %s", exc, extra={"subject": subject})
