"""The alert state machine, as pure functions: inactive → pending → firing → resolved.

Every input is an observation of one alert instance at a time `now`: HOT (the trigger condition
holds), HOLD (inside the hysteresis band: not hot, not yet back past the resolve threshold) or COLD.
`decide` returns the record to write and the notification that write entitles its writer to send,
or None when nothing changes — the common case, kept cheap because it runs per rule per frame.
Whoever wins the compare-and-set of that record in KV sends; so restarts and a second alerter
never notify twice.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable

from msgspec.structs import replace

from libs.schemas.alerting import AlertRecord

COLD, HOLD, HOT = 0, 1, 2

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


def observe(value: float, op: str, threshold: float, resolve: float | None) -> int:
    """HOT past the threshold; with a resolve threshold, COLD only once back past it."""
    if OPS[op](value, threshold):
        return HOT
    if resolve is None or op in ("==", "!="):
        return COLD
    if op in (">", ">="):
        return COLD if value < resolve else HOLD
    return COLD if value > resolve else HOLD


def fingerprint(kind: str, rule: str, host: str, labels: tuple[tuple[str, str], ...]) -> str:
    text = "\0".join([kind, rule, host] + [f"{k}={v}" for k, v in sorted(labels)])
    return hashlib.sha1(text.encode()).hexdigest()[:20]


class Instance:
    """What one alert instance is (rule × host × labels); cached, never rebuilt per frame."""

    __slots__ = ("fp", "rule", "kind", "host", "labels", "severity", "summary", "for_s", "threshold", "field")

    def __init__(
        self,
        *,
        rule: str,
        kind: str,
        host: str,
        labels: dict[str, str],
        severity: str,
        summary: str = "",
        for_s: float = 0.0,
        threshold: float | None = None,
        field: str = "",
    ) -> None:
        self.rule, self.kind, self.host, self.labels = rule, kind, host, labels
        self.severity, self.summary, self.for_s, self.threshold = severity, summary, for_s, threshold
        self.field = field
        self.fp = fingerprint(kind, rule, host, tuple(labels.items()))


def match_labels(rec: AlertRecord) -> dict[str, str]:
    """Labels silences and routes match against."""
    return {
        **rec.labels,
        "alertname": rec.rule,
        "rule": rec.rule,
        "host": rec.host,
        "severity": rec.severity,
        "kind": rec.kind,
    }


Silenced = Callable[[AlertRecord, float], bool]


def notify_due(rec: AlertRecord, now: float, repeat_s: float, silenced: Silenced) -> str | None:
    """ "firing", "repeat", "resolved" or None."""
    if rec.state == "firing":
        if rec.notified != "firing":
            kind = "firing"
        elif repeat_s > 0 and now - rec.notified_at >= repeat_s:
            kind = "repeat"
        else:
            return None
    elif rec.state == "resolved" and rec.notified == "firing":
        kind = "resolved"
    else:
        return None
    return None if silenced(rec, now) else kind


def decide(
    cur: AlertRecord | None,
    obs: int,
    now: float,
    inst: Instance,
    value: float | None,
    repeat_s: float,
    silenced: Silenced,
    failures: int = 0,
) -> tuple[AlertRecord, str | None] | None:
    if cur is None or cur.state in ("inactive", "resolved"):
        if obs != HOT:
            if cur is not None and cur.state == "resolved" and cur.notified == "firing":
                kind = notify_due(cur, now, repeat_s, silenced)  # a resolve held back by a silence
                if kind:
                    return _notified(cur, kind, now, value), kind
            return None
        new = AlertRecord(
            fingerprint=inst.fp,
            rule=inst.rule,
            kind=inst.kind,
            host=inst.host,
            state="firing" if inst.for_s <= 0 else "pending",
            since=now,
            active_since=now,
            updated=now,
            severity=inst.severity,
            labels=inst.labels,
            value=value,
            threshold=inst.threshold,
            field=inst.field,
            summary=inst.summary,
            failures=failures,
        )
    elif cur.state == "pending":
        if obs == COLD:
            new = replace(cur, state="inactive", since=now, updated=now, value=value, failures=failures)
        elif now - cur.active_since >= inst.for_s:
            new = replace(cur, state="firing", since=now, updated=now, value=value, failures=failures)
        else:
            return None
    else:  # firing
        if obs == COLD:
            new = replace(cur, state="resolved", since=now, updated=now, value=value, failures=failures)
        else:
            kind = notify_due(cur, now, repeat_s, silenced)
            if kind is None:
                return None
            return _notified(cur, kind, now, value, failures), kind
    kind = notify_due(new, now, repeat_s, silenced)
    return (_notified(new, kind, now, value, failures) if kind else new), kind


def _notified(rec: AlertRecord, kind: str, now: float, value: float | None, failures: int | None = None) -> AlertRecord:
    return replace(
        rec,
        notified="resolved" if kind == "resolved" else "firing",
        notified_at=now,
        notify_count=rec.notify_count + 1,
        value=rec.value if value is None else value,
        failures=rec.failures if failures is None else failures,
        updated=now,
    )
