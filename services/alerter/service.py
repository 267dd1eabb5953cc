"""The alerter service: wiring of stores, engine, prober, dispatcher and API."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable

import httpx
from nats.aio.client import Client as NATS
from nats.js import api

from libs.runtime import ServiceStats, deadletter, open_nats, open_stats
from libs.runtime.jetstream import ensure_bucket
from libs.runtime.logs import register_secret
from libs.schemas import Codec, DecodeError, subjects
from libs.schemas.alerting import AlertRecord, Notifier, Rule, is_tls_mode
from libs.schemas.events import AlertEvent, AppStatus, HealthResult, ReplicationStatus
from libs.schemas.metrics import MetricFrame
from libs.schemas.streams import ALERT_CONFIG_BUCKET, ALERT_STATE_BUCKET

from . import rulesfile
from .api import Api
from .builtin import BUILTIN_RULES
from .checks import Prober
from .config import AlerterConfig, public_url
from .evaluate import Engine
from .machine import match_labels
from .matchers import silenced_by
from .notify.dispatch import Dispatcher
from .notify.templates import Note
from .store import ConfigStore, StateStore, started

log = logging.getLogger("alerter")

FRAME = Codec(MetricFrame)
APP = Codec(AppStatus)
REPLICA = Codec(ReplicationStatus)
EVENT = Codec(AlertEvent)
HEALTH = Codec(HealthResult)

Clock = Callable[[], float]


class Alerter:
    def __init__(
        self, config: AlerterConfig, nc: NATS, *, clock: Clock = time.time, http: httpx.AsyncClient | None = None
    ) -> None:
        self.cfg = config
        self.nc = nc
        self.js = nc.jetstream()
        self.clock = clock
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(follow_redirects=False)
        self.state: StateStore | None = None
        self.config: ConfigStore | None = None
        self.engine: Engine | None = None
        self.prober: Prober | None = None
        self.dispatcher = Dispatcher(
            notifiers=self.notifiers,
            http=self.http,
            clock=clock,
            ui_url=public_url(config),
            group_wait_s=config.group_wait_s,
            attempts=config.notify_attempts,
            backoff_s=config.notify_backoff_s,
        )
        self.api = Api(self)
        self._subs: list = []
        self._tasks: list[asyncio.Task] = []
        self.bad_messages = 0
        self.frames = 0
        self.instance_id = uuid.uuid4().hex[:12]
        self.stats = ServiceStats()
        self.stats.counter("messages_in", lambda: self.frames)
        self.stats.counter("dead_letters", lambda: self.bad_messages)
        self.stats.counter("notifications_sent", lambda: sum(self.dispatcher.sent.values()))
        self.stats.counter("notifications_failed", lambda: sum(self.dispatcher.failed.values()))
        for s in (config.telegram_bot_token, config.smtp_password, config.webhook_secret):
            register_secret(s)
        # httpx logs every request URL at INFO, and a Telegram URL carries the bot token.
        logging.getLogger("httpx").setLevel(logging.WARNING)

    # --- config views ---

    def env_notifiers(self) -> list[Notifier]:
        c = self.cfg
        return [
            Notifier(
                name="telegram",
                kind="telegram",
                base_url=c.telegram_base_url,
                bot_token=c.telegram_bot_token,
                chat_id=c.telegram_chat_id,
            ),
            Notifier(
                name="email",
                kind="email",
                smtp_host=c.smtp_host,
                smtp_port=c.smtp_port,
                smtp_tls=c.smtp_tls if is_tls_mode(c.smtp_tls) else "starttls",
                smtp_user=c.smtp_user,
                smtp_password=c.smtp_password,
                smtp_ca_file=c.smtp_ca_file,
                mail_from=c.mail_from,
                mail_to=list(c.mail_to),
            ),
            Notifier(name="webhook", kind="webhook", url=c.webhook_url, webhook_secret=c.webhook_secret),
        ]

    def notifiers(self) -> list[Notifier]:
        stored = self.config.notifiers if self.config else {}
        out = {n.name: n for n in self.env_notifiers()}
        out.update(stored)
        return [out[k] for k in sorted(out)]

    def notifier(self, name: str) -> Notifier | None:
        return next((n for n in self.notifiers() if n.name == name), None)

    def rules(self) -> list[Rule]:
        out = {r.name: r for r in BUILTIN_RULES} if self.cfg.builtin_rules else {}
        out.update(self.config.rules if self.config else {})
        return [out[k] for k in sorted(out)]

    def silenced(self, rec: AlertRecord, now: float) -> bool:
        sil = self.config.silences if self.config else {}
        return bool(sil) and silenced_by(list(sil.values()), match_labels(rec), now) is not None

    def _config_changed(self, kind: str) -> None:
        if kind == "rule" and self.engine is not None:
            self.engine.set_rules(self.rules())
        elif kind == "check" and self.prober is not None:
            self.prober.set_checks(list(started(self.config).checks.values()))
        elif kind == "notifier":
            for n in started(self.config).notifiers.values():
                for s in (n.bot_token, n.smtp_password, n.webhook_secret):
                    register_secret(s)

    # --- outputs ---

    async def _on_change(self, old: AlertRecord | None, new: AlertRecord, kind: str | None) -> None:
        self.stats.inc("alert_changes")
        if old is None or old.state != new.state:
            log.info(
                "alert %s: %s on %s",
                new.state,
                new.rule,
                new.host,
                extra={"fingerprint": new.fingerprint, "value": new.value},
            )
            if new.state != "inactive":
                ev = AlertEvent(
                    fingerprint=new.fingerprint,
                    rule=new.rule,
                    host=new.host,
                    state=new.state,
                    ts=new.since,
                    since=new.active_since or new.since,
                    severity=new.severity,
                    labels=new.labels,
                    value=new.value,
                    threshold=new.threshold,
                    summary=new.summary,
                )
                try:
                    await self.js.publish(
                        subjects.alerts(new.host, new.rule),
                        EVENT.encode(ev),
                        headers={"Nats-Msg-Id": f"{new.fingerprint}:{new.state}:{new.since}"},
                        timeout=5,
                    )
                    self.stats.inc("messages_out")
                except Exception as exc:
                    self.stats.inc("errors")
                    log.warning("could not publish alert event: %s", exc, extra={"fingerprint": new.fingerprint})
        if kind:
            self.dispatcher.submit(Note(record=new, kind=kind))

    async def _publish_health(self, res: HealthResult) -> None:
        self.stats.inc("checks_run")
        try:
            await self.js.publish(subjects.health(res.check), HEALTH.encode(res), timeout=5)
            self.stats.inc("messages_out")
        except Exception as exc:
            self.stats.inc("errors")
            log.warning("could not publish health result: %s", exc, extra={"check": res.check})

    # --- inputs ---

    async def _bad(self, msg, exc: Exception) -> None:
        self.bad_messages += 1
        await deadletter.send(self.nc, "alerter", msg.subject, msg.data, exc)

    async def _on_frame(self, msg) -> None:
        try:
            await self._frame(msg)
        finally:
            self.frames += 1  # handled (evaluated, or refused): what tests wait on

    async def _frame(self, msg) -> None:
        try:
            frame = FRAME.decode(msg.data)
        except DecodeError as exc:
            await self._bad(msg, exc)
            return
        if frame.host != subjects.token(msg.subject, 2):
            await self._bad(msg, ValueError(f"host {frame.host!r} does not match the subject"))
            return
        now = self.clock()
        seen = now
        with contextlib.suppress(Exception):
            stored = msg.metadata.timestamp.timestamp()
            if stored < now - 1.0:  # a frame replayed at start: it was seen back then
                seen = stored
        try:
            await started(self.engine).on_frame(frame, seen)
            self.stats.inc("evaluations")
        except Exception:
            self.stats.inc("errors")
            log.exception("evaluating a frame failed", extra={"host": frame.host})

    async def _on_app(self, msg) -> None:
        await self._on_host_event(msg, APP, started(self.engine).on_app, "an app status")

    async def _on_replica(self, msg) -> None:
        await self._on_host_event(msg, REPLICA, started(self.engine).on_replica, "a replication status")

    async def _on_host_event(self, msg, codec, handle, what: str) -> None:
        """Decode a per-host event, refuse one whose host is not its subject's, then evaluate it."""
        self.stats.inc("messages_in")
        try:
            st = codec.decode(msg.data)
        except DecodeError as exc:
            await self._bad(msg, exc)
            return
        if st.host != subjects.token(msg.subject, 2):
            await self._bad(msg, ValueError(f"host {st.host!r} does not match the subject"))
            return
        try:
            await handle(st)
            self.stats.inc("evaluations")
        except Exception:
            self.stats.inc("errors")
            log.exception("evaluating %s failed", what, extra={"host": st.host})

    async def _subscribe_once(self, subject: str, stream: str, cb) -> None:
        start = dt.datetime.fromtimestamp(time.time() - self.cfg.lookback_s, dt.UTC)
        cfg = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_TIME, opt_start_time=start, inactive_threshold=60.0
        )
        self._subs.append(
            await self.js.subscribe(
                subject, stream=stream, cb=cb, ordered_consumer=True, config=cfg, idle_heartbeat=5.0
            )
        )

    async def _subscribe_later(self, subject: str, stream: str, cb) -> None:
        """The stream is not provisioned yet (first boot): keep trying; the API works meanwhile."""
        delay = 0.5
        while True:
            await asyncio.sleep(delay)
            try:
                await self._subscribe_once(subject, stream, cb)
                log.info("consuming %s", subject)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot consume %s yet (%s); retrying", stream, exc)
                delay = min(delay * 2, 30.0)

    async def _subscribe(self, subject: str, stream: str, cb) -> None:
        try:
            await self._subscribe_once(subject, stream, cb)
        except Exception as exc:
            log.warning("cannot consume %s yet (%s); retrying in the background", stream, exc)
            self._tasks.append(
                asyncio.create_task(self._subscribe_later(subject, stream, cb), name=f"subscribe-{stream}")
            )

    async def _tick_loop(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(self.cfg.tick_s)
            try:
                now = self.clock()
                await started(self.engine).tick(now)
                if now - last_prune > 60:
                    last_prune = now
                    await started(self.state).prune(now, self.cfg.state_retention_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert tick failed")

    # --- lifecycle ---

    async def start(self, *, consume: bool = True, ticks: bool = True, checks: bool | None = None) -> None:
        state_kv = await ensure_bucket(self.js, ALERT_STATE_BUCKET)
        config_kv = await ensure_bucket(self.js, ALERT_CONFIG_BUCKET)
        self.state = StateStore(state_kv)
        self.engine = Engine(
            self.state,
            repeat_s=self.cfg.repeat_interval_s,
            silenced=self.silenced,
            on_change=self._on_change,
            group_interval_s=self.cfg.group_interval_s,
            group_window_s=self.cfg.group_wait_s,
            owner=self.instance_id,
        )
        state = self.state

        async def lease(name: str, now: float, ttl: float) -> bool:
            return await state.try_lease(name, self.instance_id, now, ttl)

        self.prober = Prober(
            client=self.http, clock=self.clock, publish=self._publish_health, commit=self.engine.commit, lease=lease
        )
        self.config = ConfigStore(config_kv, self._config_changed)
        await self.state.start()
        await self.config.start()
        if self.cfg.rules_file:
            await self.load_file(self.cfg.rules_file)
        self.engine.set_rules(self.rules())
        self.prober.set_checks(list(self.config.checks.values()))
        await self.api.start()
        if consume:
            await self._subscribe(subjects.METRICS_ALL, "METRICS", self._on_frame)
            await self._subscribe(subjects.APPS_ALL, "EVENTS", self._on_app)
            await self._subscribe(subjects.REPLICA_ALL, "EVENTS", self._on_replica)
        if ticks:
            self._tasks.append(asyncio.create_task(self._tick_loop(), name="alert-tick"))
        if self.cfg.run_checks if checks is None else checks:
            self.prober.start()
        await self.nc.flush()
        log.info(
            "alerter started",
            extra={"rules": len(self.rules()), "checks": len(self.prober.checks), "alerts": len(self.state.active())},
        )

    async def load_file(self, path: str) -> None:
        rf = rulesfile.load(path)
        for kind, items in (
            ("rule", rf.rules),
            ("check", rf.checks),
            ("silence", rf.silences),
            ("notifier", rf.notifiers),
        ):
            for item in items:
                try:
                    await self.api.put(kind, item)
                except ValueError as exc:
                    raise rulesfile.RulesFileError(
                        f"{path}: {kind} {getattr(item, 'name', getattr(item, 'id', '?'))}: {exc}"
                    ) from None
        log.info("rules file loaded", extra={"file": path, "rules": len(rf.rules), "checks": len(rf.checks)})

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks.clear()
        for s in self._subs:
            with contextlib.suppress(Exception):
                await s.unsubscribe()
        self._subs.clear()
        await self.api.stop()
        if self.prober:
            await self.prober.stop()
        if self.state:
            await self.state.release_leases(self.instance_id)
        await self.dispatcher.stop()
        if self.config:
            await self.config.stop()
        if self.state:
            await self.state.stop()
        if self._own_http:
            await self.http.aclose()


async def build(config: AlerterConfig, stack: contextlib.AsyncExitStack) -> Alerter:
    nc = await open_nats(stack, config.nats, "alerter")
    alerter = Alerter(config, nc)
    await open_stats(
        stack, nc, "alerter", alerter.stats, description="fleetwatch health checks, alert rules and notifications"
    )
    return alerter
