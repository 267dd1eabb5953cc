"""Idempotent create-or-update of the streams, consumers and KV buckets in libs.schemas.streams."""

from __future__ import annotations

import logging

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue

from libs.schemas.streams import BUCKETS, CONSUMERS, STREAMS, BucketSpec, ConsumerSpec, StreamSpec

log = logging.getLogger("fleetwatch.jetstream")


def stream_config(spec: StreamSpec, replicas: int = 1) -> api.StreamConfig:
    return api.StreamConfig(
        name=spec.name,
        description=spec.description or None,
        subjects=list(spec.subjects),
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE if spec.storage == "file" else api.StorageType.MEMORY,
        max_age=float(spec.max_age_s),
        max_bytes=spec.max_bytes,
        max_msg_size=spec.max_msg_size,
        duplicate_window=float(spec.duplicate_window_s),
        num_replicas=replicas,
        deny_delete=spec.deny_delete,
        deny_purge=spec.deny_purge,
    )


async def cluster_size(nc: NATS) -> int:
    """How many JetStream servers there are: streams go R3 on a cluster of 3+, R1 alone."""
    info = getattr(nc, "_server_info", {}) or {}
    urls = info.get("connect_urls") or []
    return max(1, len(urls)) if info.get("cluster") else 1


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, replicas: int = 1) -> api.StreamInfo:
    cfg = stream_config(spec, replicas)
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        log.info("creating stream", extra={"stream": spec.name})
        return await js.add_stream(cfg)
    cur = info.config
    if (
        sorted(cur.subjects or []) != sorted(cfg.subjects or [])
        or cur.max_age != cfg.max_age
        or cur.duplicate_window != cfg.duplicate_window
        or bool(cur.deny_delete) != cfg.deny_delete
        or bool(cur.deny_purge) != cfg.deny_purge
        or (cur.num_replicas or 1) != replicas
        or cur.max_msg_size != cfg.max_msg_size
    ):
        log.info("updating stream", extra={"stream": spec.name})
        return await js.update_stream(cfg)
    return info


def consumer_config(spec: ConsumerSpec) -> api.ConsumerConfig:
    fs = list(spec.filter_subjects)
    return api.ConsumerConfig(
        durable_name=spec.durable,
        name=spec.durable,
        description=spec.description or None,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        max_waiting=spec.max_waiting,
        filter_subject=fs[0] if len(fs) == 1 else None,
        filter_subjects=fs if len(fs) > 1 else None,
    )


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> api.ConsumerInfo:
    """Create or update explicitly: pull_subscribe would silently keep an old durable's config."""
    cfg = consumer_config(spec)
    try:
        return await js.add_consumer(spec.stream, cfg)
    except BadRequestError:
        # Fields that cannot be updated in place changed: the consumer is recreated. Its
        # position is lost, but ingest's inserts are idempotent so redelivery is harmless.
        log.warning("recreating consumer with changed config", extra={"consumer": spec.durable})
        await js.delete_consumer(spec.stream, spec.durable)
        return await js.add_consumer(spec.stream, cfg)


async def ensure_bucket(js: JetStreamContext, spec: BucketSpec, replicas: int = 1) -> KeyValue:
    try:
        return await js.key_value(spec.bucket)
    except (NotFoundError, Exception) as exc:  # BucketNotFoundError subclasses vary by version
        if not isinstance(exc, NotFoundError) and "not found" not in str(exc).lower():
            raise
    return await js.create_key_value(
        api.KeyValueConfig(bucket=spec.bucket, description=spec.description or None, history=spec.history, ttl=float(spec.ttl_s) or None, replicas=replicas)
    )


async def provision(nc: NATS, replicas: int | None = None) -> None:
    """Every stream, consumer and bucket fleetwatch defines. Safe to run any number of times."""
    js = nc.jetstream()
    r = replicas if replicas is not None else min(3, await cluster_size(nc))
    for spec in STREAMS:
        await ensure_stream(js, spec, r)
    for c in CONSUMERS:
        await ensure_consumer(js, c)
    for b in BUCKETS:
        await ensure_bucket(js, b, r)
