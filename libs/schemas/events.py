"""Events: app state, health, alerts, audit, users, replication, logs, dead letters."""

from __future__ import annotations

from typing import Any, Literal

from .base import Message, Part

AppState = Literal[
    "running", "stopped", "starting", "stopping", "backoff", "crashed", "zombie", "failed", "fatal", "unknown"
]


class AppStatus(Message, kw_only=True, frozen=True):
    host: str
    app: str
    state: AppState
    ts: float
    backend: str = "process"
    pid: int | None = None
    previous: str | None = None
    restarts: int = 0
    exit_code: int | None = None
    cpu_percent: float | None = None
    rss: int | None = None
    detail: str = ""


class HealthResult(Message, kw_only=True, frozen=True):
    check: str
    target: str
    ts: float
    ok: bool
    status_code: int | None = None
    latency_ms: float | None = None
    error: str = ""
    consecutive_failures: int = 0


AlertState = Literal["pending", "firing", "resolved"]


class AlertEvent(Message, kw_only=True, frozen=True):
    fingerprint: str
    rule: str
    host: str
    state: AlertState
    ts: float
    since: float
    severity: str = "warning"
    labels: dict[str, str] = {}
    value: float | None = None
    threshold: float | None = None
    summary: str = ""


class AuditRecord(Message, kw_only=True, frozen=True):
    id: str
    ts: float
    host: str
    actor: str
    action: str
    target: str = ""
    params: dict[str, Any] = {}  # secrets masked before publishing
    result: Literal["ok", "error"] = "ok"
    code: int = 200
    error: str = ""
    duration_ms: float = 0.0
    source: str = ""  # the door: ui | cli | api-token | webhook | api (gateway), nats (a direct NATS caller)


UserOp = Literal["created", "updated", "deactivated", "activated", "deleted", "password"]


class UserChange(Message, kw_only=True, frozen=True):
    """Announces that central users changed; never carries a secret."""

    ts: float
    op: UserOp
    username: str = ""
    user_id: int | None = None


class ReplicationStatus(Message, kw_only=True, frozen=True):
    host: str
    ts: float
    ok: bool
    trigger: str = "schedule"  # schedule | event | manual | start
    added: int = 0
    updated: int = 0
    removed: int = 0
    total: int = 0
    duration_ms: float = 0.0
    error: str = ""
    # Central users this sync did not replicate, "name: reason" (a clash with a local account of
    # the host, an invalid field...); at most 50, then one "+N more" entry.
    skipped: list[str] = []


class LogLine(Part, kw_only=True, frozen=True):
    ts: float
    line: str
    stream: str = "stdout"
    level: str = ""


class LogBatch(Message, kw_only=True, frozen=True):
    host: str
    app: str
    lines: list[LogLine] = []
    seq: int = 0
