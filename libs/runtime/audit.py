"""Audit records onto the AUDIT stream, which keeps them for 400 days: an action is audited once,
even when NATS blinks (a reconnect, a stream leader election) while it is being recorded.

Nothing stored there can be edited or deleted, and operators read it: every record is masked
here, the one door onto the stream, before it is published (argv secrets, every env value)."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from libs.schemas import AuditRecord, Codec, streams, subjects
from libs.schemas.secrets import mask_deep, mask_text

from .stats import ServiceStats

log = logging.getLogger("fleetwatch.audit")
AUDIT = Codec(AuditRecord)
# Retries stay well inside the stream's duplicate window, so a retried record is stored once.
RETRY_S = streams.AUDIT.duplicate_window_s / 2


def masked(rec: AuditRecord) -> AuditRecord:
    """`rec` as it may be kept: secret-looking params and error text masked, env values hidden."""
    return msgspec.structs.replace(rec, params=mask_deep(rec.params), error=mask_text(rec.error))


async def record(js, rec: AuditRecord, stats: ServiceStats | None = None, *, retry_s: float = RETRY_S) -> bool:
    """Publish `rec` on its host's audit subject and wait for the stream's ack, publishing again
    with the same Nats-Msg-Id until it is stored or `retry_s` has passed. False when given up."""
    rec = masked(rec)
    data = AUDIT.encode(rec)
    deadline = time.monotonic() + retry_s
    delay = 0.25
    while True:
        try:
            await js.publish(subjects.audit(rec.host), data, timeout=5, headers={"Nats-Msg-Id": rec.id})
            return True
        except Exception as exc:
            if time.monotonic() + delay > deadline:
                if stats is not None:
                    stats.inc("errors")
                log.error(
                    "audit record not stored: %s",
                    exc,
                    extra={"action": rec.action, "target": rec.target, "audit_id": rec.id},
                )
                return False
            log.warning(
                "audit record not stored yet, retrying: %s", exc, extra={"action": rec.action, "audit_id": rec.id}
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 4.0)
