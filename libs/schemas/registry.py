"""Every published message type, its codec, and JSON Schema export (`make schemas`)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from .codec import Codec
from .events import AlertEvent, AppStatus, AuditRecord, HealthResult, LogBatch, ReplicationStatus, UserChange
from .metrics import HostInfo, MetricFrame, ProcessSnapshot

# Services add their request/reply types here as they land (control, alerting config...).
MESSAGE_TYPES: list[type] = [
    MetricFrame,
    ProcessSnapshot,
    HostInfo,
    AppStatus,
    HealthResult,
    AlertEvent,
    AuditRecord,
    UserChange,
    ReplicationStatus,
    LogBatch,
]

CODECS: dict[type, Codec] = {t: Codec(t) for t in MESSAGE_TYPES}


def codec(t: type) -> Codec:
    c = CODECS.get(t)
    if c is None:
        c = CODECS[t] = Codec(t)
    return c


def render_schemas() -> dict[str, str]:
    """file name -> JSON Schema text, for every message type."""
    out = {}
    for t in MESSAGE_TYPES:
        schema = msgspec.json.schema(t)
        out[f"{t.__name__}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        p = directory / name
        p.write_text(text)
        written.append(p)
    return written


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")
    for p in write_schemas(target):
        print(p)
