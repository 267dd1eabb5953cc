"""Rules over what arrives: metric frames (each rule × host × series, on arrival), missing frames
(host down, checked on a tick), app states and replication results.

Metric rules are evaluated at the frame's own timestamp, so every alerter instance reaches the
same decision for the same frame, and a test can replay an hour of frames without waiting.
Host-down uses the injected clock against the time NATS stored each frame.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from libs.schemas.alerting import AlertRecord, Rule
from libs.schemas.events import AppStatus, ReplicationStatus
from libs.schemas.metrics import MetricFrame

from .fields import Extractor, Labels, compile_field
from .machine import COLD, HOLD, HOT, OPS, Instance, decide
from .matchers import host_selected
from .store import GROUP_PREFIX, StateStore

log = logging.getLogger("alerter.rules")

DEFAULT_APP_STATES = ["crashed", "zombie", "failed", "fatal"]

Commit = Callable[[Instance, int, float, "float | None"], Awaitable[None]]


def _no_values(frame: MetricFrame) -> list[tuple[Labels, float]]:
    """The extractor of a rule that does not read metric frames (host_down, app, replica)."""
    return []


class CompiledRule:
    __slots__ = ("rule", "extract", "op", "threshold", "resolve", "_instances", "_selected")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.extract: Extractor = compile_field(rule.field) if rule.kind == "metric" else _no_values
        self.op = OPS[rule.op]
        self.threshold = rule.threshold
        self.resolve = rule.resolve if rule.op not in ("==", "!=") else None
        self._instances: dict[tuple, Instance] = {}
        self._selected: dict[str, bool] = {}

    def selects(self, host: str) -> bool:
        s = self._selected.get(host)
        if s is None:
            s = self._selected[host] = host_selected(self.rule.hosts, host)
        return s

    def instance(self, host: str, labels: tuple) -> Instance:
        key = (host, labels)
        inst = self._instances.get(key)
        if inst is None:
            r = self.rule
            inst = self._instances[key] = Instance(
                rule=r.name,
                kind=r.kind,
                host=host,
                labels={**r.labels, **dict(labels)},
                severity=r.severity,
                summary=r.summary,
                for_s=r.for_s,
                threshold=r.threshold if r.kind == "metric" else None,
                field=r.field if r.kind == "metric" else "",
            )
        return inst

    def observe(self, value: float) -> int:
        if self.op(value, self.threshold):
            return HOT
        res = self.resolve
        if res is None:
            return COLD
        if self.rule.op in (">", ">="):
            return COLD if value < res else HOLD
        return COLD if value > res else HOLD


def validate_rule(rule: Rule) -> None:
    """ValueError with a reason for a rule that cannot be evaluated."""
    from libs.schemas.ids import check_name

    check_name(rule.name, "rule name")
    if rule.kind == "metric":
        if not rule.field:
            raise ValueError("a metric rule needs a field")
        compile_field(rule.field)
        if rule.resolve is not None and rule.op in (">", ">=") and rule.resolve > rule.threshold:
            raise ValueError(f"resolve {rule.resolve} must not be above threshold {rule.threshold} for op {rule.op}")
        if rule.resolve is not None and rule.op in ("<", "<=") and rule.resolve < rule.threshold:
            raise ValueError(f"resolve {rule.resolve} must not be below threshold {rule.threshold} for op {rule.op}")
    if rule.for_s < 0:
        raise ValueError("for_s must be >= 0")
    if rule.kind == "host_down" and rule.missed_intervals <= 0:
        raise ValueError("missed_intervals must be > 0")
    if rule.kind == "app":
        from typing import get_args

        from libs.schemas.events import AppState

        bad = [s for s in rule.states if s not in get_args(AppState)]
        if bad:
            raise ValueError(f"unknown app states {bad}; known: {', '.join(get_args(AppState))}")


def group_key(rec: AlertRecord) -> str:
    """The notification group of an alert: its rule (the dispatcher's message batches too)."""
    return f"{GROUP_PREFIX}{rec.kind}.{rec.rule}"


class Engine:
    """`group_interval_s` > 0: once a group (kind, rule) has notified, its next notification of
    any kind waits until that long after the flush it opened; the alerts due meanwhile go out
    together (one message per notifier and kind). The flush is claimed in KV, so every instance
    keeps the same pace; alerts due within `group_window_s` of the flush join it, on the
    instance that opened it."""

    def __init__(
        self,
        state: StateStore,
        *,
        repeat_s: float,
        silenced: Callable[[AlertRecord, float], bool],
        on_change: Callable[[AlertRecord | None, AlertRecord, str | None], Awaitable[None]],
        group_interval_s: float = 0.0,
        group_window_s: float = 0.0,
        owner: str = "",
    ) -> None:
        self.state = state
        self.repeat_s = repeat_s
        self.user_silenced = silenced
        self.group_interval_s = group_interval_s
        self.group_window_s = group_window_s
        self.owner = owner
        # What holds a due notification back: a silence, or the group's interval.
        self.silenced = self._held if group_interval_s > 0 else silenced
        self.on_change = on_change
        self.metric: list[CompiledRule] = []
        self.host_down: list[CompiledRule] = []
        self.app: list[CompiledRule] = []
        self.replica: list[CompiledRule] = []
        self.last_seen: dict[str, tuple[float, float]] = {}  # host -> (seen at, interval)
        self.evaluations = 0

    def set_rules(self, rules: list[Rule]) -> None:
        by_kind: dict[str, list[CompiledRule]] = {"metric": [], "host_down": [], "app": [], "replica": []}
        for r in rules:
            if not r.enabled:
                continue
            try:
                by_kind[r.kind].append(CompiledRule(r))
            except ValueError as exc:
                log.error("skipping rule %s: %s", r.name, exc)
        self.metric, self.host_down, self.app, self.replica = (
            by_kind["metric"],
            by_kind["host_down"],
            by_kind["app"],
            by_kind["replica"],
        )

    # --- the hot path: pure, synchronous, allocation-free unless something changes ---

    def frame_work(self, frame: MetricFrame, seen_at: float) -> list[tuple[Instance, int, float, float | None]]:
        host = frame.host
        now = frame.ts
        records = self.state.records
        repeat_s, silenced = self.repeat_s, self.silenced
        work: list[tuple[Instance, int, float, float | None]] = []
        n = 0
        for cr in self.metric:
            if not cr.selects(host):
                continue
            for labels, value in cr.extract(frame):
                n += 1
                obs = cr.observe(value)
                inst = cr.instance(host, labels)
                cur = records.get(inst.fp)
                if cur is None and obs != HOT:
                    continue
                if decide(cur, obs, now, inst, value, repeat_s, silenced) is not None:
                    work.append((inst, obs, now, value))
        prev = self.last_seen.get(host)
        self.last_seen[host] = (max(seen_at, prev[0]) if prev else seen_at, frame.interval)
        for cr in self.host_down:
            if cr.selects(host):
                n += 1
                inst = cr.instance(host, ())
                cur = records.get(inst.fp)
                if cur is not None and decide(cur, COLD, seen_at, inst, None, repeat_s, silenced) is not None:
                    work.append((inst, COLD, seen_at, None))
        self.evaluations += n
        return work

    # --- notification groups ---

    def _joins(self, g, now: float) -> bool:
        """`now` falls in the flush this instance opened (before the group's interval ends)."""
        return (
            g.owner == self.owner
            and abs(now - g.opened) <= self.group_window_s
            and now < g.opened + self.group_interval_s
        )

    def _held(self, rec: AlertRecord, now: float) -> bool:
        if self.user_silenced(rec, now):
            return True
        g = self.state.group(group_key(rec))
        return g is not None and now < g.opened + self.group_interval_s and not self._joins(g, now)

    async def _flush(self, rec: AlertRecord, now: float) -> bool:
        """Before a notifying write: join this instance's open flush, or open a new one in KV."""
        key = group_key(rec)
        g = self.state.group(key)
        if g is not None and self._joins(g, now):
            return True
        return await self.state.claim_group(key, self.owner, now)

    async def commit(self, inst: Instance, obs: int, now: float, value: float | None, failures: int = 0) -> None:
        seen: list[AlertRecord | None] = []

        def decision(cur: AlertRecord | None):
            seen.append(cur)
            return decide(cur, obs, now, inst, value, self.repeat_s, self.silenced, failures)

        async def flush(new: AlertRecord, kind: str) -> bool:
            return await self._flush(new, now)

        out = await self.state.apply(inst.fp, decision, prepare=flush if self.group_interval_s > 0 else None)
        if out is not None:
            new, kind = out
            await self.on_change(seen[-1], new, kind)

    async def on_frame(self, frame: MetricFrame, seen_at: float) -> None:
        for item in self.frame_work(frame, seen_at):
            await self.commit(*item)

    async def tick(self, now: float) -> None:
        """Host down (no frame for `missed_intervals` intervals), and notifications that are
        due without new input: repeats, and alerts whose silence ended."""
        records = self.state.records
        for cr in self.host_down:
            limit = cr.rule.missed_intervals
            for host, (seen, interval) in list(self.last_seen.items()):
                if not cr.selects(host):
                    continue
                obs = HOT if now - seen > limit * interval else COLD
                inst = cr.instance(host, ())
                cur = records.get(inst.fp)
                if cur is None and obs != HOT:
                    continue
                if decide(cur, obs, now, inst, None, self.repeat_s, self.silenced) is not None:
                    await self.commit(inst, obs, now, None)
        await self.renotify(now)

    async def renotify(self, now: float) -> None:
        from .machine import notify_due

        for fp, rec in list(self.state.records.items()):
            if rec.state not in ("firing", "resolved"):
                continue
            if notify_due(rec, now, self.repeat_s, self.silenced) is None:
                continue
            inst = Instance(
                rule=rec.rule,
                kind=rec.kind,
                host=rec.host,
                labels=rec.labels,
                severity=rec.severity,
                summary=rec.summary,
                threshold=rec.threshold,
                field=rec.field,
            )
            inst.fp = fp
            await self.commit(inst, HOT if rec.state == "firing" else COLD, now, None, rec.failures)

    async def on_app(self, st: AppStatus) -> None:
        for cr in self.app:
            if cr.selects(st.host):
                states = cr.rule.states or DEFAULT_APP_STATES
                obs = HOT if st.state in states else COLD
                inst = cr.instance(st.host, (("app", st.app),))
                if self.state.records.get(inst.fp) is None and obs != HOT:
                    continue
                self.evaluations += 1
                await self.commit(inst, obs, st.ts, None)

    async def on_replica(self, st: ReplicationStatus) -> None:
        for cr in self.replica:
            if cr.selects(st.host):
                obs = COLD if st.ok else HOT
                inst = cr.instance(st.host, ())
                if self.state.records.get(inst.fp) is None and obs != HOT:
                    continue
                self.evaluations += 1
                await self.commit(inst, obs, st.ts, None)
