"""JetStream streams, consumers and KV buckets, as data. libs.runtime.jetstream applies them.

Trust (docs/security.md): a host agent may be compromised. Every stream and bucket therefore has
storage limits (`max_bytes`, `max_msg_size`, per-subject counts where a subject is one host's),
which `FLEETWATCH_JETSTREAM_<NAME>_*` settings override (libs.runtime.jetstream.Limits). JetStream's
duplicate window is stream-wide, so a `Nats-Msg-Id` is a key any publisher on the stream can
take first: streams agents write to (`agents=True`) carry only ids no other host can guess (the
collector's per-boot secret, audit records' random ids), and central services' deterministic ids
(the alerter's alert events) live in CENTRAL, which no agent may publish to. Ingest never relies
on the dedupe: its primary keys make a second copy of a message harmless.
"""

from __future__ import annotations

import msgspec

from . import subjects as s

DAY = 86400
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    subjects: list[str]
    max_age_s: int
    storage: str = "file"
    duplicate_window_s: int = 120
    deny_delete: bool = False
    deny_purge: bool = False
    # Limits: the oldest messages go when max_bytes is reached (they are normally stored by ingest
    # long before), a message over max_msg_size is refused, max_msgs_per_subject (-1: none) keeps
    # that many per subject.
    max_bytes: int = 1 * GiB
    max_msg_size: int = 2 * MiB
    max_msgs_per_subject: int = -1
    agents: bool = False  # host agents may publish here (see the module docstring)
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
    # KV streams discard new writes once full: max_bytes is sized for every key's values.
    max_bytes: int = 64 * MiB
    max_value_size: int = 1 * MiB
    # A `Nats-Rollup: all` message on any key wipes the whole bucket: refused (allow_rollup_hdrs
    # off, deny_purge on) where an agent writes. KeyValue.purge needs rollups, so not everywhere.
    allow_rollup: bool = True
    agents: bool = False  # host agents write here (each its own key, by permission)
    description: str = ""


# Sum of the defaults (streams and buckets): ~8 GiB, inside nats-config's default
# max_file_store (10G). METRICS at 4 GiB holds about 2 h of 1,000 hosts' frames.
METRICS = StreamSpec(
    name="METRICS",
    subjects=[s.METRICS_ALL, s.PROCS_ALL, s.HOSTS_ALL],
    max_age_s=1 * DAY,
    max_bytes=4 * GiB,
    agents=True,
    description="metric frames, process snapshots and host info",
)
EVENTS = StreamSpec(
    name="EVENTS",
    subjects=[s.APPS_ALL, s.REPLICA_ALL],
    max_age_s=7 * DAY,
    max_bytes=512 * MiB,
    agents=True,
    description="app state and replication, from the hosts",
)
# What only central services publish: here a deterministic Nats-Msg-Id (the alerter's
# `fingerprint:state:since`, which dedupes replicas publishing the same transition) is safe.
CENTRAL = StreamSpec(
    name="CENTRAL",
    subjects=[s.HEALTH_ALL, s.ALERTS_ALL, s.USERS_CHANGED],
    max_age_s=7 * DAY,
    max_bytes=512 * MiB,
    description="health results, alerts and user changes, from central services",
)
AUDIT = StreamSpec(
    name="AUDIT",
    subjects=[s.AUDIT_ALL],
    max_age_s=400 * DAY,
    deny_delete=True,
    deny_purge=True,
    max_bytes=2 * GiB,
    agents=True,
    description="every control action, success or not",
)
DEADLETTER = StreamSpec(
    name="DEADLETTER",
    subjects=[s.DEADLETTER_ALL],
    max_age_s=14 * DAY,
    max_bytes=512 * MiB,
    max_msg_size=8 * MiB,  # the server's max_payload: a central service quarantines what it got
    description="raw bytes of messages central services could not decode; reason in headers",
)
# An agent's dead letters: small, and a bounded count per `fleet.deadletter.<kind>.<host>`, so
# one host cannot fill the quarantine (3 kinds x 20 x 1 MiB at most) or push others' out.
AGENT_DEADLETTER = StreamSpec(
    name="AGENT_DEADLETTER",
    subjects=[s.AGENT_DEADLETTER_ALL],
    max_age_s=14 * DAY,
    max_bytes=256 * MiB,
    max_msg_size=1 * MiB,
    max_msgs_per_subject=20,
    agents=True,
    description="raw bytes of messages host agents could not decode, per host; reason in headers",
)

# EVENTS before CENTRAL: an older deployment's EVENTS still lists CENTRAL's subjects, and a
# subject can be in one stream only, so EVENTS gives them up first.
STREAMS: tuple[StreamSpec, ...] = (METRICS, EVENTS, CENTRAL, AUDIT, DEADLETTER, AGENT_DEADLETTER)

INGEST_METRICS = ConsumerSpec(stream="METRICS", durable="ingest_metrics", description="ingest -> metrics tables")
INGEST_EVENTS = ConsumerSpec(stream="EVENTS", durable="ingest_events", description="ingest -> event tables")
INGEST_CENTRAL = ConsumerSpec(stream="CENTRAL", durable="ingest_central", description="ingest -> event tables")
INGEST_AUDIT = ConsumerSpec(stream="AUDIT", durable="ingest_audit", description="ingest -> audit_log")

CONSUMERS: tuple[ConsumerSpec, ...] = (INGEST_METRICS, INGEST_EVENTS, INGEST_CENTRAL, INGEST_AUDIT)

# Every collector writes its own key (permission `$KV.fleet_hosts.<host>`); rollups refused.
HOSTS_BUCKET = BucketSpec(
    bucket="fleet_hosts",
    history=1,
    max_bytes=128 * MiB,
    max_value_size=64 * KiB,
    allow_rollup=False,
    agents=True,
    description="latest HostInfo per host",
)
ALERT_STATE_BUCKET = BucketSpec(
    bucket="alert_state", history=1, max_bytes=256 * MiB, description="alert state machine, by fingerprint"
)

# Rules, checks, silences and notifiers (keys `rule.<name>`...): every alerter watches it.
ALERT_CONFIG_BUCKET = BucketSpec(bucket="alert_config", history=5, description="alerting config, edited at run time")

# Hosts registered through the gateway (POST /api/v1/hosts): the auth callout service lets an
# agent in while its entry exists. Key: host id; value: libs.schemas.registration.AgentRecord.
AGENTS_BUCKET = BucketSpec(
    bucket="fleet_agents",
    history=1,
    max_value_size=64 * KiB,
    description="registered hosts: hashed agent secret, who added it",
)

# Signed webhook requests already accepted, by signature, shared by every gateway replica (the
# first create wins). A timestamp is accepted within ±window of the gateway's clock, so one
# signature can arrive over 2 × window: the TTL is twice the default window (300 s); a gateway
# configured with a longer window creates the bucket with twice that.
WEBHOOK_REPLAY_BUCKET = BucketSpec(
    bucket="webhook_replay",
    history=1,
    ttl_s=600,
    max_value_size=64 * KiB,
    description="signed webhook requests seen (replay guard)",
)

# The run-as policy of jobs and apps (services/gateway/controllers/policy.py): one key per host
# and `fleet.default`; only admins write it, through the gateway.
POLICY_BUCKET = BucketSpec(
    bucket="fleet_policy",
    history=5,
    max_bytes=16 * MiB,
    max_value_size=256 * KiB,
    description="run-as policy of jobs and apps, by host",
)

BUCKETS: tuple[BucketSpec, ...] = (
    HOSTS_BUCKET,
    ALERT_STATE_BUCKET,
    ALERT_CONFIG_BUCKET,
    AGENTS_BUCKET,
    WEBHOOK_REPLAY_BUCKET,
    POLICY_BUCKET,
)

# Headers carried by dead letters.
H_REASON = "Fleet-Reason"
H_SUBJECT = "Fleet-Subject"
H_PATH = "Fleet-Path"
H_TRUNCATED = "Fleet-Truncated"  # the original length, when only the first bytes fit the stream
