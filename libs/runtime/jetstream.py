"""Idempotent create-or-update of the streams, consumers and KV buckets in libs.schemas.streams."""

from __future__ import annotations

import asyncio
import logging

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError
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
    """How many servers the cluster this connection belongs to has (1 when not clustered).

    A clustered nats-server names its cluster in INFO and lists every member's client URL in
    `connect_urls` (itself included); members that joined after we connected arrive in later
    INFO messages, which the client adds to its server pool as discovered servers.
    """
    info = getattr(nc, "_server_info", {}) or {}
    if not info.get("cluster"):
        return 1
    urls = {str(u) for u in info.get("connect_urls") or []}
    for srv in getattr(nc, "_server_pool", []) or []:
        if getattr(srv, "discovered", False) and srv.uri is not None:
            urls.add(f"{srv.uri.hostname}:{srv.uri.port}")
    return max(1, len(urls))


def replicas_for(size: int) -> int:
    """R3 on a cluster of 3 or more, R1 alone (R2 on two nodes: a majority of 2 is both)."""
    return max(1, min(3, size))


async def wait_jetstream(nc: NATS, timeout: float = 30.0) -> None:
    """A fresh cluster answers the JetStream API only once its meta leader is elected."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await nc.jetstream().account_info()
            return
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError):
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, replicas: int = 1) -> api.StreamInfo:
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        log.info("creating stream", extra={"stream": spec.name, "replicas": replicas})
        return await js.add_stream(stream_config(spec, replicas))
    cur = info.config
    # Never lower an existing stream's replicas: provisioning while a node is down sees a
    # smaller cluster, and shrinking R3 to R1 then would throw away the copies that survive it.
    replicas = max(replicas, cur.num_replicas or 1)
    cfg = stream_config(spec, replicas)
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
        api.KeyValueConfig(
            bucket=spec.bucket,
            description=spec.description or None,
            history=spec.history,
            ttl=float(spec.ttl_s) or None,
            replicas=replicas,
        )
    )


async def provision(nc: NATS, replicas: int | None = None) -> None:
    """Every stream, consumer and bucket fleetwatch defines. Safe to run any number of times."""
    js = nc.jetstream()
    if replicas is None:
        if await cluster_size(nc) > 1:
            await wait_jetstream(nc)
        replicas = replicas_for(await cluster_size(nc))
    r = replicas
    for spec in STREAMS:
        await ensure_stream(js, spec, r)
    for c in CONSUMERS:
        await ensure_consumer(js, c)
    for b in BUCKETS:
        await ensure_bucket(js, b, r)
