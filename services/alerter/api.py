"""Request/reply on `fleet.alerting.<resource>.<verb>` (queue group `alerter`: one instance
answers). Resources: rules, checks, silences, notifiers (list/put/delete, notifiers also test),
alerts (list). Notifier secrets are accepted on put and never returned, and stay bound to where
they are sent and to who set them (notify/binding.py)."""

from __future__ import annotations

import logging
import re
import uuid
from typing import TYPE_CHECKING, TypeVar

import msgspec
from nats.aio.subscription import Subscription

from libs.runtime.logs import register_secret
from libs.schemas import Codec, DecodeError, subjects
from libs.schemas.alerting import (
    AlertingReply,
    Check,
    ConfigDelete,
    ConfigList,
    ConfigPut,
    Notifier,
    NotifierTestSend,
    RoleName,
    Rule,
    Silence,
    notifier_view,
)
from libs.schemas.ids import InvalidId, check_name

from .checks import validate_check
from .evaluate import validate_rule
from .matchers import check_matcher
from .notify.binding import BindingError, bind
from .notify.transports import missing_config
from .store import ConfigItem, started

if TYPE_CHECKING:
    from .service import Alerter

log = logging.getLogger("alerter.api")

REPLY = Codec(AlertingReply)
PUT = Codec(ConfigPut)
DELETE = Codec(ConfigDelete)
LIST = Codec(ConfigList)
TEST = Codec(NotifierTestSend)

KIND = {"rules": "rule", "checks": "check", "silences": "silence", "notifiers": "notifier"}
_URL = re.compile(r"^https?://[^\s]+$")

Item = TypeVar("Item", Rule, Check, Silence, Notifier)


class ApiError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def validate_silence(s: Silence) -> None:
    check_name(s.id, "silence id")
    if not s.matchers:
        raise ValueError("a silence needs at least one matcher")
    for m in s.matchers:
        check_matcher(m)
    if s.ends <= s.starts:
        raise ValueError("silence ends must be after starts")


def validate_notifier(n: Notifier) -> None:
    check_name(n.name, "notifier name")
    if n.kind == "telegram" and not _URL.match(n.base_url):
        raise ValueError("telegram base_url must be an http(s) URL")
    if n.kind == "webhook" and n.url and not _URL.match(n.url):
        raise ValueError("webhook url must be an http(s) URL")
    if n.kind == "email":
        if not (0 < n.smtp_port < 65536):
            raise ValueError("smtp_port must be 1-65535")
        for a in n.mail_to:
            if "@" not in a or any(c in a for c in "\r\n,"):
                raise ValueError(f"bad recipient address {a!r}")
        if any(c in n.mail_from for c in "\r\n"):
            raise ValueError("bad sender address")
    for m in n.matchers:
        check_matcher(m)


def _key(item: ConfigItem) -> str:
    """What names an item of its kind: a silence has an id instead of a name."""
    return item.id if isinstance(item, Silence) else item.name


def _named(items: list[Item], name: str, kind: str) -> list[Item]:
    """All of `items`, or with `name` set the one so named (404 when there is none)."""
    if not name:
        return items
    found = [i for i in items if _key(i) == name]
    if not found:
        raise ApiError(404, f"no {kind} named {name!r}")
    return found


class Api:
    def __init__(self, alerter: Alerter) -> None:
        self.a = alerter
        self.sub: Subscription | None = None

    async def start(self) -> None:
        self.sub = await self.a.nc.subscribe(subjects.ALERTING_ALL, queue="alerter", cb=self._handle)
        await self.a.nc.flush()  # the server knows the subscription before anyone is told we started

    async def stop(self) -> None:
        if self.sub is not None:
            try:
                await self.sub.unsubscribe()
            except Exception:
                pass

    async def _handle(self, msg) -> None:
        if not msg.reply:
            return
        parts = msg.subject.split(".")
        try:
            if len(parts) != 4:
                raise ApiError(404, f"unknown endpoint {msg.subject}")
            reply = await self.handle(parts[2], parts[3], msg.data)
        except ApiError as exc:
            reply = AlertingReply(ok=False, code=exc.code, error=str(exc))
        except DecodeError as exc:
            reply = AlertingReply(ok=False, code=400, error=str(exc))
            await self.a._bad(msg, exc)  # quarantined and counted like a bad frame
        except (ValueError, InvalidId) as exc:
            reply = AlertingReply(ok=False, code=400, error=str(exc))
        except Exception:
            log.exception("alerting request failed", extra={"subject": msg.subject})
            reply = AlertingReply(ok=False, code=500, error="internal error")
        try:
            await msg.respond(REPLY.encode(reply))
        except Exception as exc:
            log.warning("could not reply: %s", exc)

    async def handle(self, resource: str, verb: str, data: bytes) -> AlertingReply:
        """Also the in-process entry point (tests, the rules file)."""
        if resource == "alerts" and verb == "list":
            query = LIST.decode(data or b"{}")
            recs = started(self.a.state).active(query.include_inactive)
            if query.name:
                recs = [r for r in recs if r.fingerprint == query.name or r.rule == query.name]
            return AlertingReply(alerts=recs)
        kind = KIND.get(resource)
        if kind is None:
            raise ApiError(404, f"unknown resource {resource!r}; known: alerts, {', '.join(KIND)}")
        if verb == "list":
            return self._listing(kind, LIST.decode(data or b"{}").name)
        if verb == "put":
            put = PUT.decode(data)
            item = getattr(put, kind)
            if item is None:
                raise ApiError(400, f"{resource}.put needs a {kind!r} object")
            return await self.put(kind, item, put.role or "admin")
        if verb == "delete":
            gone = DELETE.decode(data)
            if not await started(self.a.config).delete(kind, gone.name):
                raise ApiError(404, f"no {kind} named {gone.name!r}")
            return AlertingReply()
        if verb == "test" and kind == "notifier":
            test = TEST.decode(data)
            n = self.a.notifier(test.name)
            if n is None:
                raise ApiError(404, f"no notifier named {test.name!r}")
            gap = missing_config(n)
            if gap:
                raise ApiError(409, f"notifier {n.name} is not configured ({gap})")
            err = await self.a.dispatcher.send_text(n, test.text)
            if err:
                return AlertingReply(ok=False, code=502, error=err)
            return AlertingReply(notifiers=[notifier_view(n)])
        raise ApiError(404, f"unknown verb {verb!r} for {resource}")

    def _listing(self, kind: str, name: str) -> AlertingReply:
        if kind == "rule":
            return AlertingReply(rules=_named(self.a.rules(), name, kind))
        if kind == "notifier":
            return AlertingReply(notifiers=[notifier_view(n) for n in _named(self.a.notifiers(), name, kind)])
        config = started(self.a.config)
        if kind == "check":
            return AlertingReply(checks=_named(sorted(config.checks.values(), key=_key), name, kind))
        return AlertingReply(silences=_named(sorted(config.silences.values(), key=_key), name, kind))

    async def put(self, kind: str, item: ConfigItem, role: RoleName = "admin") -> AlertingReply:
        """Validate and store `item` as a `kind` (rule, check, silence, notifier) for a caller
        of `role` (the rules file and in-process callers are an admin's)."""
        if kind == "rule" and isinstance(item, Rule):
            validate_rule(item)
            await self._store(kind, item.name, item)
            return AlertingReply(rules=[item])
        if kind == "check" and isinstance(item, Check):
            validate_check(item)
            await self._store(kind, item.name, item)
            return AlertingReply(checks=[item])
        if kind == "silence" and isinstance(item, Silence):
            if not item.id:
                item = msgspec.structs.replace(item, id=uuid.uuid4().hex[:12])
            validate_silence(item)
            await self._store(kind, item.id, item)
            return AlertingReply(silences=[item])
        if kind == "notifier" and isinstance(item, Notifier):
            validate_notifier(item)
            # The notifier in effect, the environment's included: its secrets are as bound.
            try:
                item = bind(item, self.a.notifier(item.name), role)
            except BindingError as exc:
                raise ApiError(exc.code, str(exc)) from None
            for s in (item.bot_token, item.smtp_password, item.webhook_secret):
                register_secret(s)
            await self._store(kind, item.name, item)
            return AlertingReply(notifiers=[notifier_view(item)])
        raise ValueError(f"a {type(item).__name__} is not a {kind}")

    async def _store(self, kind: str, name: str, item: ConfigItem) -> None:
        await started(self.a.config).put(kind, name, item)
        log.info("alerting %s %s stored", kind, name, extra={"kind": kind, "item": name})
