"""Idempotent create-or-update of the streams, consumers and KV buckets in libs.schemas.streams.

Storage limits come from the specs; `FLEETWATCH_JETSTREAM_<NAME>_MAX_BYTES`, `..._MAX_MSG_SIZE`
and `..._MAX_MSGS_PER_SUBJECT` (NAME: a stream, e.g. METRICS, or `KV_<BUCKET>`, e.g.
KV_FLEET_HOSTS, where MAX_MSG_SIZE is the largest value) override them. Whatever provisions
applies them (the setup step, and ingest for its own streams at start), so every process that
provisions should see the same values, as they see the same NATS URL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue

from libs.schemas.streams import BUCKETS, CONSUMERS, STREAMS, BucketSpec, ConsumerSpec, StreamSpec

from .settings import load_settings

log = logging.getLogger("fleetwatch.jetstream")


class Limits(msgspec.Struct, kw_only=True, frozen=True):
    """Overrides of one stream's (or bucket's) limits; None: the spec's default."""

    max_bytes: int | None = None
    max_msg_size: int | None = None
    max_msgs_per_subject: int | None = None

    def __post_init__(self) -> None:
        # Unlimited is what the limits exist to prevent: a setting may change a size, not drop it.
        for name in ("max_bytes", "max_msg_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1")


def limits(name: str, env: Mapping[str, str] | None = None) -> Limits:
    return load_settings(Limits, f"FLEETWATCH_JETSTREAM_{name.upper()}_", env)


def stream_spec(spec: StreamSpec, env: Mapping[str, str] | None = None) -> StreamSpec:
    """The spec with this deployment's limit settings applied."""
    o = limits(spec.name, env)
    return msgspec.structs.replace(
        spec,
        max_bytes=spec.max_bytes if o.max_bytes is None else o.max_bytes,
        max_msg_size=spec.max_msg_size if o.max_msg_size is None else o.max_msg_size,
        max_msgs_per_subject=spec.max_msgs_per_subject if o.max_msgs_per_subject is None else o.max_msgs_per_subject,
    )


def bucket_spec(spec: BucketSpec, env: Mapping[str, str] | None = None) -> BucketSpec:
    o = limits(f"KV_{spec.bucket}", env)
    return msgspec.structs.replace(
        spec,
        max_bytes=spec.max_bytes if o.max_bytes is None else o.max_bytes,
        max_value_size=spec.max_value_size if o.max_msg_size is None else o.max_msg_size,
    )


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
        max_msgs_per_subject=spec.max_msgs_per_subject,
        discard=api.DiscardPolicy.OLD,
        duplicate_window=float(spec.duplicate_window_s),
        num_replicas=replicas,
        deny_delete=spec.deny_delete,
        deny_purge=spec.deny_purge,
        # No `Nats-Rollup` on any stream: one such message from an agent would erase the rest.
        allow_rollup_hdrs=False,
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
    spec = stream_spec(spec)
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
        or cur.max_bytes != cfg.max_bytes
        or (cur.max_msgs_per_subject or -1) != cfg.max_msgs_per_subject
        or cur.discard != cfg.discard
        or bool(cur.allow_rollup_hdrs)
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
    """Open the bucket, creating it when missing; its limits (and, where agents write, the
    refusal of rollups) are brought to the spec's on an existing one too."""
    spec = bucket_spec(spec)
    try:
        kv = await js.key_value(spec.bucket)
    except (NotFoundError, Exception) as exc:  # BucketNotFoundError subclasses vary by version
        if not isinstance(exc, NotFoundError) and "not found" not in str(exc).lower():
            raise
        kv = await js.create_key_value(
            api.KeyValueConfig(
                bucket=spec.bucket,
                description=spec.description or None,
                history=spec.history,
                ttl=float(spec.ttl_s) or None,
                replicas=replicas,
                max_bytes=spec.max_bytes,
                max_value_size=spec.max_value_size,
            )
        )
    await _bucket_limits(js, spec)
    return kv


async def _bucket_limits(js: JetStreamContext, spec: BucketSpec) -> None:
    stream = f"KV_{spec.bucket}"
    cur = (await js.stream_info(stream)).config
    want = dataclasses.replace(cur, max_bytes=spec.max_bytes, max_msg_size=spec.max_value_size)
    if not spec.allow_rollup:
        # KV writes never need a rollup except KeyValue.purge, which nobody runs on such a
        # bucket; deny_purge shuts the stream purge API as well (deny_delete is KV's default).
        want = dataclasses.replace(want, allow_rollup_hdrs=False, deny_purge=True)
    if want != cur:
        log.info("updating bucket limits", extra={"bucket": spec.bucket})
        await js.update_stream(want)


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
