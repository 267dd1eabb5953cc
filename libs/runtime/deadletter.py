"""Messages that fail to decode are quarantined, never dropped silently and never fatal.

A central service's dead letters go to `fleet.deadletter.<service>` (stream DEADLETTER), a host
agent's to `fleet.deadletter.<kind>.<host>` (AGENT_DEADLETTER: the only dead-letter subjects its
permissions allow, with a small size limit). What does not fit the stream is kept as its first
bytes, with the original length in `Fleet-Truncated`, rather than refused and lost.
"""

from __future__ import annotations

import logging

from nats.aio.client import Client as NATS
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

from libs.schemas import subjects
from libs.schemas.codec import DecodeError
from libs.schemas.streams import AGENT_DEADLETTER, DEADLETTER, H_PATH, H_REASON, H_SUBJECT, H_TRUNCATED

from .jetstream import stream_spec

log = logging.getLogger("fleetwatch.deadletter")


# Room left for the headers (reason, subject, path: each cut to 1000 characters).
HEADROOM = 8 * 1024


def agent_host(nc: NATS) -> str:
    """The host an agent's connection speaks for, "" for a central service: agents must use the
    reply prefix `_INBOX_<host>` (their permissions allow no other inbox)."""
    prefix = bytes(getattr(nc, "_inbox_prefix", b"")).decode(errors="replace")
    marker = subjects.inbox_prefix("x")[:-1]  # "_INBOX_"
    return prefix[len(marker) :] if prefix.startswith(marker) else ""


async def send(
    nc: NATS, service: str, subject: str, data: bytes, reason: str | Exception, *, host: str | None = None
) -> None:
    """Quarantine `data` (which arrived on `subject`). An agent kind's dead letter goes to its
    host's subject: `host`, or the host of the connection's inbox when not given."""
    if host is None:
        host = agent_host(nc) if service in subjects.AGENT_KINDS else ""
    spec = AGENT_DEADLETTER if host else DEADLETTER
    path = reason.path if isinstance(reason, DecodeError) else ""
    text = str(reason)[:1000]
    headers = {H_REASON: text.replace("\n", " "), H_SUBJECT: subject[:1000]}
    if path:
        headers[H_PATH] = path[:1000]
    room = stream_spec(spec).max_msg_size - HEADROOM
    if len(data) > room:
        headers[H_TRUNCATED] = str(len(data))
        data = data[:room]
    log.warning("dead-lettered message", extra={"subject": subject, "reason": text, "bytes": len(data)})
    try:
        js = nc.jetstream()
        await js.publish(subjects.deadletter(service, host), data, headers=headers, timeout=5)
    except Exception as exc:  # the quarantine itself failing must not take the service down
        log.error("could not publish dead letter: %s", exc, extra={"subject": subject})


async def refuse(
    nc: NATS, service: str, msg, reason: str | Exception, body: bytes = b"", *, host: str | None = None
) -> None:
    """A request that cannot be understood: quarantined like any bad message, and answered with
    a micro error 400 naming why (`body`, when given, keeps older callers' reply shape)."""
    await send(nc, service, msg.subject, msg.data, reason, host=host)
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
