"""Messages a person reads: what, where, value, since when, and a link to the UI."""

from __future__ import annotations

import time

import msgspec

from libs.schemas.alerting import AlertRecord

HEAD = {"firing": "FIRING", "repeat": "STILL FIRING", "resolved": "RESOLVED", "test": "TEST"}
ICON = {"firing": "\U0001f525", "repeat": "\U0001f501", "resolved": "\u2705", "test": "\U0001f514"}


class Note(msgspec.Struct, kw_only=True, frozen=True):
    """One alert to notify about: the record as written, and why (firing/repeat/resolved)."""

    record: AlertRecord
    kind: str


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _ago(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 90:
        return f"{s}s"
    if s < 5400:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d"


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if abs(v) < 1e6 else f"{v:.3g}"


def where(r: AlertRecord) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in sorted(r.labels.items()) if k not in ("check", "target"))
    place = "fleet-wide" if r.host == "_fleet" else f"host {r.host}"
    return f"{place}" + (f" ({extra})" if extra else "")


def line(n: Note, now: float, ui_url: str) -> str:
    r = n.record
    what = r.summary or r.rule
    start = r.active_since or r.since
    parts = [f"{ICON.get(n.kind, '')} {HEAD.get(n.kind, n.kind.upper())} [{r.severity}] {what}", f"where: {where(r)}"]
    if r.kind == "check":
        parts.append(
            f"target: {r.labels.get('target', '-')}"
            + (f", last HTTP status {int(r.value)}" if r.value is not None else "")
        )
    elif r.value is not None or r.threshold is not None:
        parts.append(f"value: {_fmt(r.value)} (threshold {_fmt(r.threshold)})")
    if n.kind == "resolved":
        parts.append(f"since: {_when(start)}, resolved {_when(r.since)} after {_ago(r.since - start)}")
    else:
        parts.append(f"since: {_when(start)} ({_ago(now - start)} ago)")
    parts.append(f"details: {ui_url.rstrip('/')}/alerts/{r.fingerprint}")
    return "\n".join(parts)


def render(notes: list[Note], now: float, ui_url: str) -> tuple[str, str]:
    """(subject line, body text) for a group of alerts."""
    subject, body = _render(notes, now, ui_url)
    return " ".join(subject.split())[:200], body  # one line: a mail header cannot hold a newline


def _render(notes: list[Note], now: float, ui_url: str) -> tuple[str, str]:
    first = notes[0]
    r = first.record
    head = HEAD.get(first.kind, first.kind.upper())
    if len(notes) == 1:
        subject = f"[{head}] {r.summary or r.rule} on {r.host if r.host != '_fleet' else 'fleet'}"
        return subject, line(first, now, ui_url)
    hosts = sorted({n.record.host for n in notes})
    subject = f"[{head}] {r.rule}: {len(notes)} alerts ({', '.join(hosts[:5])}{', ...' if len(hosts) > 5 else ''})"
    return subject, f"{len(notes)} alerts\n\n" + "\n\n".join(line(n, now, ui_url) for n in notes)
