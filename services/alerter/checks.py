"""HTTP(S) health checks: probe, publish a HealthResult, feed the state machine.

An alert fires after `failure_threshold` consecutive failures and resolves on the first success
(one recovery notice). Between a first failure and the threshold the alert neither fires nor
resolves (HOLD), so a single blip does not page anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import httpx

from libs.schemas.alerting import Check
from libs.schemas.events import HealthResult
from libs.schemas.ids import check_name

from .machine import COLD, HOLD, HOT, Instance

log = logging.getLogger("alerter.checks")

METHODS = ("GET", "HEAD", "POST", "PUT", "OPTIONS")


def validate_check(c: Check) -> None:
    check_name(c.name, "check name")
    if not (c.url.startswith("http://") or c.url.startswith("https://")):
        raise ValueError(f"check url must be http:// or https://, got {c.url!r}")
    if c.method.upper() not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}")
    if c.interval_s < 0.1 or c.timeout_s <= 0:
        raise ValueError("interval_s must be >= 0.1 and timeout_s > 0")
    if not (100 <= c.status_min <= c.status_max <= 599):
        raise ValueError("expected status range must satisfy 100 <= status_min <= status_max <= 599")
    if c.failure_threshold < 1:
        raise ValueError("failure_threshold must be >= 1")


def _json_path(body: object, path: str) -> tuple[bool, object]:
    cur = body
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return False, None
    return True, cur


def _as_text(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "null" if v is None else str(v)


async def probe(client: httpx.AsyncClient, c: Check, now: float) -> HealthResult:
    start = time.perf_counter()
    code = None
    error = ""
    try:
        resp = await client.request(c.method.upper(), c.url, timeout=c.timeout_s)
        code = resp.status_code
        if not (c.status_min <= code <= c.status_max):
            error = f"HTTP {code}, expected {c.status_min}-{c.status_max}"
        elif c.json_field:
            try:
                found, val = _json_path(resp.json(), c.json_field)
            except ValueError:
                found, val = False, None
                error = "body is not JSON"
            if not error:
                if not found:
                    error = f"JSON field {c.json_field!r} missing"
                elif c.json_value is not None and _as_text(val) != c.json_value:
                    error = f"JSON field {c.json_field} = {_as_text(val)!r}, expected {c.json_value!r}"
    except httpx.TimeoutException:
        error = f"timeout after {c.timeout_s:g}s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
    latency = (time.perf_counter() - start) * 1000
    return HealthResult(
        check=c.name, target=c.url, ts=now, ok=not error, status_code=code, latency_ms=round(latency, 2), error=error
    )


class Prober:
    """One task per enabled check; `probe_once` is also what a test drives by hand."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        clock: Callable[[], float],
        publish: Callable[[HealthResult], Awaitable[None]],
        commit: Callable[[Instance, int, float, float | None, int], Awaitable[None]],
        lease: Callable[[str, float, float], Awaitable[bool]] | None = None,
    ) -> None:
        self.client = client
        self.clock = clock
        self.publish = publish
        self.commit = commit
        self.lease = lease
        self.skipped = 0  # probes left to the instance holding the check's lease
        self.checks: dict[str, Check] = {}
        self.failures: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self.running = False

    def set_checks(self, checks: list[Check]) -> None:
        wanted = {c.name: c for c in checks if c.enabled}
        for name in list(self._tasks):
            if name not in wanted or wanted[name] != self.checks.get(name):
                self._tasks.pop(name).cancel()
        self.checks = wanted
        for name in list(self.failures):
            if name not in wanted:
                del self.failures[name]
        if self.running:
            for name in wanted:
                if name not in self._tasks:
                    self._tasks[name] = asyncio.create_task(self._loop(name), name=f"check-{name}")

    def start(self) -> None:
        self.running = True
        self.set_checks(list(self.checks.values()))

    async def stop(self) -> None:
        self.running = False
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t

    async def _loop(self, name: str) -> None:
        while True:
            c = self.checks.get(name)
            if c is None:
                return
            began = time.monotonic()
            try:
                await self.probe_once(name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("health check %s crashed; continuing", name)
            await asyncio.sleep(max(0.0, c.interval_s - (time.monotonic() - began)))

    async def probe_once(self, name: str) -> HealthResult | None:
        """Probe now, unless another alerter holds this check's lease (then None): several
        instances do not double the load on a target nor its HealthResults."""
        c = self.checks[name]
        now = self.clock()
        if self.lease is not None and not await self.lease(name, now, 2 * c.interval_s + c.timeout_s + 1.0):
            self.skipped += 1
            return None
        res = await probe(self.client, c, now)
        fails = 0 if res.ok else self.failures.get(name, 0) + 1
        self.failures[name] = fails
        res = HealthResult(**{**{f: getattr(res, f) for f in res.__struct_fields__}, "consecutive_failures": fails})
        await self.publish(res)
        obs = COLD if res.ok else (HOT if fails >= c.failure_threshold else HOLD)
        inst = Instance(
            rule=c.name,
            kind="check",
            host="_fleet",
            labels={**c.labels, "check": c.name, "target": c.url},
            severity=c.severity,
            summary=f"health check {c.name} failing: {res.error}" if not res.ok else f"health check {c.name}",
        )
        await self.commit(inst, obs, now, float(res.status_code) if res.status_code is not None else None, fails)
        return res
