"""Alerting configuration (rules, checks, silences, notifiers), alert state, and the
request/reply types the alerter answers on `fleet.alerting.<resource>.<verb>`.

Notifier secrets (bot token, SMTP password, webhook secret) are write-only: they travel in a
`ConfigPut`, are stored for the alerter, and every read returns `NotifierView`, which only says
whether a secret is set. A stored secret is bound to its destination and to the role that set
it (`secrets_role`): see services/alerter/notify/binding.py.
"""

from __future__ import annotations

from typing import Literal, TypeGuard, get_args

from .base import Message, Part
from .secrets import mask_url

Op = Literal[">", ">=", "<", "<=", "==", "!="]
RuleKind = Literal["metric", "host_down", "app", "replica"]
Severity = Literal["info", "warning", "critical"]
MatchOp = Literal["=", "!=", "=~", "!~"]
RecordState = Literal["inactive", "pending", "firing", "resolved"]
NotifierKind = Literal["telegram", "email", "webhook"]
TlsMode = Literal["starttls", "tls", "none"]
RoleName = Literal["viewer", "operator", "admin"]


def is_tls_mode(value: str) -> TypeGuard[TlsMode]:
    """`value` names a TLS mode (settings are plain text; a Notifier holds a TlsMode)."""
    return value in get_args(TlsMode)


class Matcher(Part, kw_only=True, frozen=True):
    """Label matcher, as in Alertmanager: `name op value` (`=~` is a full-match regex)."""

    name: str
    value: str
    op: MatchOp = "="


class Rule(Part, kw_only=True, frozen=True):
    """`field op threshold for for_s`, resolved when the value crosses `resolve` (hysteresis).

    kind `metric` reads `field` from each MetricFrame (`cpu.percent`, `mem.percent`,
    `disk.percent` per mount, `gpu.temperature` per GPU...); `host_down` fires when a host sends
    no frame for `missed_intervals` of its interval; `app` fires on AppStatus states in
    `states`; `replica` fires when a ReplicationStatus is not ok.
    """

    name: str = ""  # required; may come from the URL path instead of the body
    kind: RuleKind = "metric"
    field: str = ""
    op: Op = ">"
    threshold: float = 0.0
    resolve: float | None = None  # None: resolved as soon as the condition is false
    for_s: float = 0.0
    severity: Severity = "warning"
    labels: dict[str, str] = {}
    hosts: list[str] = []  # shell-style patterns of host ids; empty = every host (fleet-wide)
    states: list[str] = []  # kind app: which AppStatus states fire
    missed_intervals: float = 3.0  # kind host_down
    summary: str = ""  # free text shown in notifications
    enabled: bool = True


class Check(Part, kw_only=True, frozen=True):
    """An HTTP(S) health check; defaults follow the keep-alive monitor of the seeds."""

    name: str = ""  # required; may come from the URL path instead of the body
    url: str
    method: str = "GET"
    interval_s: float = 60.0
    timeout_s: float = 5.0
    status_min: int = 200
    status_max: int = 299
    json_field: str = ""  # dotted path into the JSON body, e.g. `status`
    json_value: str | None = None  # expected value (compared as text); None: the field must exist
    failure_threshold: int = 2
    severity: Severity = "critical"
    labels: dict[str, str] = {}
    enabled: bool = True


class Silence(Part, kw_only=True, frozen=True):
    id: str
    matchers: list[Matcher]
    starts: float
    ends: float
    created_by: str = ""
    comment: str = ""


class NotifierBase(Part, kw_only=True, frozen=True):
    name: str = ""  # required; may come from the URL path instead of the body
    kind: NotifierKind
    enabled: bool = True
    # Route: which alerts this notifier gets (all matchers must match; empty = every alert).
    matchers: list[Matcher] = []
    min_severity: Severity = "info"
    # telegram
    base_url: str = "https://api.telegram.org"
    chat_id: str = ""
    # email
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_tls: TlsMode = "starttls"
    smtp_user: str = ""
    smtp_ca_file: str = ""  # extra CA to trust (self-signed relay); system CAs otherwise
    mail_from: str = ""
    mail_to: list[str] = []
    # webhook
    url: str = ""


class Notifier(NotifierBase, kw_only=True, frozen=True):
    """Stored form, secrets included; never returned by a read."""

    bot_token: str = ""
    smtp_password: str = ""
    webhook_secret: str = ""
    # Who set the stored secrets; only that role or a higher one may move or replace them. Set
    # by the alerter from the request's role (a body's value is ignored); a record stored
    # before this existed, the environment's and the rules file's count as an admin's.
    secrets_role: RoleName = "admin"


class NotifierView(NotifierBase, kw_only=True, frozen=True):
    """What a read returns: secrets replaced by whether they are set, URLs with their
    credentials masked."""

    bot_token_set: bool = False
    smtp_password_set: bool = False
    webhook_secret_set: bool = False
    secrets_role: RoleName = "admin"


class AlertRecord(Part, kw_only=True, frozen=True):
    """State of one alert instance (rule, host, labels) in KV `alert_state`, keyed by fingerprint."""

    fingerprint: str
    rule: str
    kind: str
    host: str
    state: RecordState
    since: float  # when the current state began
    active_since: float = 0.0  # when the condition first held (pending or firing)
    updated: float = 0.0
    severity: str = "warning"
    labels: dict[str, str] = {}
    value: float | None = None
    threshold: float | None = None
    field: str = ""  # the metric rule's field, so a notice can format its value (%, bytes, count)
    summary: str = ""
    failures: int = 0  # health checks: consecutive failures
    notified: str = ""  # "" | "firing" | "resolved": the last state that was notified
    notified_at: float = 0.0
    notify_count: int = 0


# ---- request/reply on fleet.alerting.<resource>.<verb> ----


class ConfigPut(Message, kw_only=True, frozen=True):
    """`rules.put` / `checks.put` / `silences.put` / `notifiers.put`: exactly one item set."""

    rule: Rule | None = None
    check: Check | None = None
    silence: Silence | None = None
    notifier: Notifier | None = None
    actor: str = ""
    # The actor's role: what it may do to a notifier's secrets. Empty from a caller on NATS
    # itself (rules file, tests, tools with service credentials), which counts as an admin.
    role: Literal["", "viewer", "operator", "admin"] = ""


class ConfigDelete(Message, kw_only=True, frozen=True):
    name: str
    actor: str = ""


class ConfigList(Message, kw_only=True, frozen=True):
    """Request of `<resource>.list` (and `alerts.list`); `name` narrows to one item."""

    name: str = ""
    include_inactive: bool = False


class NotifierTestSend(Message, kw_only=True, frozen=True):
    name: str
    text: str = "fleetwatch test notification"


class AlertingReply(Message, kw_only=True, frozen=True):
    ok: bool = True
    code: int = 200
    error: str = ""
    rules: list[Rule] = []
    checks: list[Check] = []
    silences: list[Silence] = []
    notifiers: list[NotifierView] = []
    alerts: list[AlertRecord] = []


def notifier_view(n: Notifier) -> NotifierView:
    fields = {f: getattr(n, f) for f in NotifierBase.__struct_fields__}
    return NotifierView(
        **{**fields, "base_url": mask_url(n.base_url), "url": mask_url(n.url)},
        bot_token_set=bool(n.bot_token),
        smtp_password_set=bool(n.smtp_password),
        webhook_secret_set=bool(n.webhook_secret),
        secrets_role=n.secrets_role,
    )
