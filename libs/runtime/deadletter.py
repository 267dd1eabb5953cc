"""Messages that fail to decode are quarantined, never dropped silently and never fatal."""

from __future__ import annotations

import logging

from nats.aio.client import Client as NATS
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

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


async def refuse(nc: NATS, service: str, msg, reason: str | Exception, body: bytes = b"") -> None:
    """A request that cannot be understood: quarantined like any bad message, and answered with
    a micro error 400 naming why (`body`, when given, keeps older callers' reply shape)."""
    await send(nc, service, msg.subject, msg.data, reason)
    if not msg.reply:
        return
    try:
        await nc.publish(
            msg.reply,
            body,
            headers={ERROR_HEADER: f"malformed request: {reason}"[:1000].replace("\n", " "), ERROR_CODE_HEADER: "400"},
        )
    except Exception as exc:
        log.warning("could not answer a malformed request: %s", exc, extra={"subject": msg.subject})
