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


_PERCENT = ("percent", "iowait", "steal")
_BYTES = ("bytes_", "_bps", "mem_total", "mem_used", "available", "total", "used", "free")


def _human_bytes(v: float) -> str:
    if abs(v) < 1024:
        return f"{v:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        v /= 1024
        if abs(v) < 1024:
            return f"{v:.1f} {unit}"
    return f"{v / 1024:.1f} TiB"


def fmt_value(field: str, v: float | None) -> str:
    """A value as a person reads it for its field: 87.5%, 1.5 GiB/s, 503, 2.35."""
    if v is None:
        return "-"
    name = field.rpartition(".")[2]
    if any(p in name for p in _PERCENT):
        return f"{v:.1f}%"
    if field.startswith("gpu.mem_"):
        return f"{v:.0f} MiB"  # NVML reports GPU memory in MiB
    if any(p in name for p in _BYTES) and not field.startswith("procs."):
        return _human_bytes(v) + ("/s" if name.endswith("_bps") or field.startswith(("net.", "iface.")) else "")
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.2f}" if abs(v) < 1e6 else f"{v:.3g}"


def alert_url(ui_url: str, fingerprint: str) -> str:
    """The UI's page for one alert (a hash route: the gateway serves one index.html)."""
    return f"{ui_url.rstrip('/')}/#/alerts/{fingerprint}"


def place_name(host: str) -> str:
    return "fleet-wide" if host == "_fleet" else host


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
        parts.append(f"value: {fmt_value(r.field, r.value)} (threshold {fmt_value(r.field, r.threshold)})")
    if n.kind == "resolved":
        parts.append(f"since: {_when(start)}, resolved {_when(r.since)} after {_ago(r.since - start)}")
    else:
        parts.append(f"since: {_when(start)} ({_ago(now - start)} ago)")
    parts.append(f"details: {alert_url(ui_url, r.fingerprint)}")
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
        subject = f"[{head}] {r.summary or r.rule} on {place_name(r.host)}"
        return subject, line(first, now, ui_url)
    hosts = sorted({place_name(n.record.host) for n in notes})
    subject = f"[{head}] {r.rule}: {len(notes)} alerts ({', '.join(hosts[:5])}{', ...' if len(hosts) > 5 else ''})"
    return subject, f"{len(notes)} alerts\n\n" + "\n\n".join(line(n, now, ui_url) for n in notes)
