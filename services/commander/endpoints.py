"""The commander's request plumbing: one micro endpoint per verb under fleet.ctl.<host>.

Each request is decoded (400 on a bad body, and the body dead-lettered), rate-limited when it
changes an app or job (429), run by its handler, answered with a typed reply or a micro error
(CtlError's code, 500 for a bug), counted, and audited on fleet.audit.<host> when it changes
something, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats.micro
from nats.micro.request import Request
from nats.micro.service import ServiceStats as MicroStats

from libs.runtime import ServiceStats, audit, deadletter, mask_mapping
from libs.schemas import AuditRecord, Codec, DecodeError, subjects
from libs.schemas.control import (
    AppListRequest,
    AppLogsRequest,
    AppRegisterRequest,
    AppRequest,
    JobCleanupRequest,
    JobListRequest,
    JobReply,
    JobRequest,
    JobRunRequest,
    ScanRequest,
)

from .errors import CtlError, bad
from .ratelimit import RateLimiter

log = logging.getLogger("commander")
_ENC = msgspec.json.Encoder()

# verb -> (request type, handler method name, target field, mutating?)
ENDPOINTS: dict[str, tuple[type, str, str, bool]] = {
    "apps.list": (AppListRequest, "apps_list", "", False),
    "apps.register": (AppRegisterRequest, "apps_register", "spec.name", True),
    "apps.remove": (AppRequest, "apps_remove", "name", True),
    "apps.start": (AppRequest, "apps_start", "name", True),
    "apps.stop": (AppRequest, "apps_stop", "name", True),
    "apps.restart": (AppRequest, "apps_restart", "name", True),
    "apps.status": (AppRequest, "apps_status", "name", False),
    "apps.logs": (AppLogsRequest, "apps_logs", "name", False),
    "jobs.run": (JobRunRequest, "jobs_run", "", True),
    "jobs.list": (JobListRequest, "jobs_list", "", False),
    "jobs.get": (JobRequest, "jobs_get", "id", False),
    "jobs.stop": (JobRequest, "jobs_stop", "id", True),
    "jobs.restart": (JobRequest, "jobs_restart", "id", True),
    "jobs.logs": (JobRequest, "jobs_logs", "id", False),
    "jobs.cleanup": (JobCleanupRequest, "jobs_cleanup", "", True),
    "procs.scan": (ScanRequest, "procs_scan", "", False),
}
CODECS: dict[str, Codec[Any]] = {verb: Codec(t) for verb, (t, *_rest) in ENDPOINTS.items()}


def endpoint_name(verb: str) -> str:
    return verb.replace(".", "-")


def target_of(req: Any, field: str) -> str:
    if not field:
        return ""
    obj = req
    for part in field.split("."):
        obj = getattr(obj, part, "")
    return str(obj) if obj else ""


def guess_actor(data: bytes) -> str:
    """The actor of a body that did not decode, if it names one: the audit says who tried."""
    try:
        obj = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return ""
    a = obj.get("actor") if isinstance(obj, dict) else None
    return a[:200] if isinstance(a, str) else ""


class VerbStats:
    """One verb's counts as $SRV.STATS shows them. Requests are answered from tasks (a slow stop
    must not hold up the next request), so micro's own counts see a handler that returns at
    once and never fails; these see the whole request."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.last_error = ""
        self.processing_ns = 0

    def add(self, code: int, error: str, duration_ms: float) -> None:
        self.requests += 1
        self.processing_ns += int(duration_ms * 1e6)
        if code != 200:
            self.errors += 1
            self.last_error = f"{code}:{error}"


class Endpoints:
    """Serves ENDPOINTS with the handler methods of `handlers` (the Commander)."""

    def __init__(self, handlers: object, nc: Any, host: str, stats: ServiceStats, rate_per_app_s: float) -> None:
        self.handlers = handlers
        self.nc = nc
        self.js = nc.jetstream()
        self.host = host
        self.stats = stats
        self.rate_per_app_s = rate_per_app_s
        self.limiter = RateLimiter(rate_per_app_s)
        self.verbs = {verb: VerbStats() for verb in ENDPOINTS}
        self.tasks: set[asyncio.Task] = set()

    async def add_to(self, service: nats.micro.Service) -> None:
        for verb in ENDPOINTS:
            await service.add_endpoint(
                name=endpoint_name(verb),
                subject=subjects.ctl(self.host, verb),
                handler=self._handler(verb),
                metadata={"verb": verb},
            )
        # $SRV.STATS answers with service.stats(): show our counts of the verbs there
        # (public API only: the stats document it returns, not micro's endpoint internals)
        micro_stats = service.stats
        by_name = {endpoint_name(verb): counts for verb, counts in self.verbs.items()}

        def stats() -> MicroStats:
            doc = micro_stats()
            for ep in doc.endpoints:
                counts = by_name.get(ep.name)
                if counts is not None:
                    ep.num_requests = counts.requests
                    ep.num_errors = counts.errors
                    ep.last_error = counts.last_error or None
                    ep.processing_time = counts.processing_ns
                    ep.average_processing_time = counts.processing_ns // max(1, counts.requests)
            return doc

        service.stats = stats  # type: ignore[method-assign]

    def _handler(self, verb: str) -> Callable[[Request], Awaitable[None]]:
        async def handle(req: Request) -> None:
            # Answer from a task: a slow stop (SIGTERM grace) must not hold up other requests.
            t = asyncio.create_task(self.serve(verb, req))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

        return handle

    async def serve(self, verb: str, req: Request) -> None:
        t0 = time.perf_counter()
        req_type, method, target_field, mutating = ENDPOINTS[verb]
        actor, target, params, source = "", "", {}, ""
        code, error, body = 200, "", b""
        try:
            try:
                r = CODECS[verb].decode(req.data)
            except DecodeError as exc:
                actor = guess_actor(req.data)
                self.stats.inc("dead_letters")
                await deadletter.send(self.nc, "commander", req.subject, req.data, exc)
                raise bad(f"malformed {verb} request: {exc.reason} (at {exc.path})") from None
            actor = r.actor
            source = r.source
            # a cleanup acts on the host's finished jobs, not one: the audit names that
            target = target_of(r, target_field) or ("jobs" if verb == "jobs.cleanup" else "")
            params = {k: v for k, v in msgspec.to_builtins(r).items() if k not in ("actor", "v", "policy", "source")}
            if not actor:
                raise bad("actor is required: the user or automation on whose behalf this runs")
            if mutating and target:
                self._limit(verb, target)
            reply = await getattr(self.handlers, method)(r)
            if isinstance(reply, JobReply) and not target:
                target = reply.job.id  # jobs.run: the audit names the job it created
            body = _ENC.encode(reply)
        except CtlError as exc:
            code, error = exc.code, exc.message
        except Exception as exc:  # a bug must answer 500, not leave the caller waiting
            log.exception("handler %s failed", verb)
            code, error = 500, f"internal error: {type(exc).__name__}"
        try:
            if code == 200:
                await req.respond(body)
            else:
                await req.respond_error(str(code), error)
        except Exception as exc:
            log.warning("could not answer %s: %s", verb, exc)
        duration = (time.perf_counter() - t0) * 1000
        self.stats.inc("messages_in")
        if code >= 500:
            self.stats.inc("errors")
        elif code != 200:
            self.stats.inc("refused")
        self.verbs[verb].add(code, error, duration)
        if mutating:  # reads (lists, status, logs, scans) change nothing and are not audited
            await self._audit(verb, actor, target, params, code, error, duration, source)

    def _limit(self, verb: str, target: str) -> None:
        kind = "app" if verb.startswith("apps.") else "job"
        wait = self.limiter.allow(f"{kind}:{target}")
        if wait:
            raise CtlError(
                429,
                f"{kind} {target!r} had an operation less than {self.rate_per_app_s:g}s ago; retry in {wait:.2f}s",
            )

    async def _audit(
        self, verb: str, actor: str, target: str, params: dict, code: int, error: str, duration_ms: float, source: str
    ) -> None:
        rec = AuditRecord(
            id=uuid.uuid4().hex,
            ts=time.time(),
            host=self.host,
            actor=actor or "unknown",
            action=verb,
            target=target,
            params=mask_mapping(params),
            result="ok" if code == 200 else "error",
            code=code,
            error=error,
            duration_ms=round(duration_ms, 3),
            # the door the gateway says the request came through; a direct NATS caller is "nats"
            source=source[:20] or "nats",
        )
        await audit.record(self.js, rec, self.stats)
