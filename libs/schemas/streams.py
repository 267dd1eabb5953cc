"""JetStream streams, consumers and KV buckets, as data. libs.runtime.jetstream applies them."""

from __future__ import annotations

import msgspec

from . import subjects as s

DAY = 86400


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    subjects: list[str]
    max_age_s: int
    storage: str = "file"
    duplicate_window_s: int = 120
    deny_delete: bool = False
    deny_purge: bool = False
    max_bytes: int = -1
    max_msg_size: int = 8 * 1024 * 1024
    description: str = ""


class ConsumerSpec(msgspec.Struct, frozen=True, kw_only=True):
    stream: str
    durable: str
    filter_subjects: list[str] = []
    ack_wait_s: float = 30.0
    max_ack_pending: int = 20000
    max_deliver: int = -1
    max_waiting: int = 512
    description: str = ""


class BucketSpec(msgspec.Struct, frozen=True, kw_only=True):
    bucket: str
    history: int = 1
    ttl_s: int = 0
    description: str = ""


METRICS = StreamSpec(
    name="METRICS",
    subjects=[s.METRICS_ALL, s.PROCS_ALL, s.HOSTS_ALL],
    max_age_s=1 * DAY,
    description="metric frames, process snapshots and host info",
)
EVENTS = StreamSpec(
    name="EVENTS",
    subjects=[s.APPS_ALL, s.HEALTH_ALL, s.ALERTS_ALL, s.USERS_CHANGED, s.REPLICA_ALL],
    max_age_s=7 * DAY,
    description="app state, health, alerts, user changes, replication",
)
AUDIT = StreamSpec(
    name="AUDIT",
    subjects=[s.AUDIT_ALL],
    max_age_s=400 * DAY,
    deny_delete=True,
    deny_purge=True,
    description="every control action, success or not",
)
DEADLETTER = StreamSpec(
    name="DEADLETTER",
    subjects=[s.DEADLETTER_ALL],
    max_age_s=14 * DAY,
    description="raw bytes of messages that failed to decode; reason in headers",
)

STREAMS: tuple[StreamSpec, ...] = (METRICS, EVENTS, AUDIT, DEADLETTER)

INGEST_METRICS = ConsumerSpec(stream="METRICS", durable="ingest_metrics", description="ingest -> metrics tables")
INGEST_EVENTS = ConsumerSpec(stream="EVENTS", durable="ingest_events", description="ingest -> event tables")
INGEST_AUDIT = ConsumerSpec(stream="AUDIT", durable="ingest_audit", description="ingest -> audit_log")

CONSUMERS: tuple[ConsumerSpec, ...] = (INGEST_METRICS, INGEST_EVENTS, INGEST_AUDIT)

HOSTS_BUCKET = BucketSpec(bucket="fleet_hosts", history=1, description="latest HostInfo per host")
ALERT_STATE_BUCKET = BucketSpec(bucket="alert_state", history=1, description="alert state machine, by fingerprint")

# Rules, checks, silences and notifiers (keys `rule.<name>`...): every alerter watches it.
ALERT_CONFIG_BUCKET = BucketSpec(bucket="alert_config", history=5, description="alerting config, edited at run time")

# Hosts registered through the gateway (POST /api/v1/hosts): the auth callout service lets an
# agent in while its entry exists. Key: host id; value: libs.schemas.registration.AgentRecord.
AGENTS_BUCKET = BucketSpec(
    bucket="fleet_agents", history=1, description="registered hosts: hashed agent secret, who added it"
)

# Signed webhook requests already accepted, by signature, shared by every gateway replica (the
# first create wins). A timestamp is accepted within ±window of the gateway's clock, so one
# signature can arrive over 2 × window: the TTL is twice the default window (300 s); a gateway
# configured with a longer window creates the bucket with twice that.
WEBHOOK_REPLAY_BUCKET = BucketSpec(
    bucket="webhook_replay", history=1, ttl_s=600, description="signed webhook requests seen (replay guard)"
)

BUCKETS: tuple[BucketSpec, ...] = (
    HOSTS_BUCKET,
    ALERT_STATE_BUCKET,
    ALERT_CONFIG_BUCKET,
    AGENTS_BUCKET,
    WEBHOOK_REPLAY_BUCKET,
)

# Headers carried by dead letters.
H_REASON = "Fleet-Reason"
H_SUBJECT = "Fleet-Subject"
H_PATH = "Fleet-Path"
