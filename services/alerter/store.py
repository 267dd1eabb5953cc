"""Alert state and alerting config in NATS KV.

`StateStore` caches every record of bucket `alert_state` with its revision and writes with
compare-and-set (`update(last=revision)`): of two alerters deciding the same transition, exactly
one write succeeds, and only its writer notifies. A watch keeps the cache current with what the
other instances write. `ConfigStore` mirrors bucket `alert_config` (keys `rule.<name>`,
`check.<name>`, `silence.<id>`, `notifier.<name>`) and calls back on every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from libs.schemas import Codec, encode
from libs.schemas.alerting import AlertRecord, Check, Notifier, Rule, Silence

log = logging.getLogger("alerter.store")


class Lease(msgspec.Struct, kw_only=True, frozen=True):
    """Who probes a health check (key `lease.<check>` in `alert_state`): one instance at a time,
    taken over when its holder stops renewing."""

    owner: str
    until: float


class GroupState(msgspec.Struct, kw_only=True, frozen=True):
    """When a notification group (key `group.<kind>.<rule>` in `alert_state`) last opened a flush,
    and which instance did: only that one adds alerts to the flush, everyone else holds theirs
    until `group_interval_s` has passed, so a restarted or second alerter keeps the pace."""

    opened: float
    owner: str


NEVER_FLUSHED = GroupState(opened=float("-inf"), owner="")
RECORD = Codec(AlertRecord)
LEASE = Codec(Lease)
GROUP = Codec(GroupState)
LEASE_PREFIX = "lease."
GROUP_PREFIX = "group."
Decision = Callable[[AlertRecord | None], "tuple[AlertRecord, str | None] | None"]
Prepare = Callable[[AlertRecord, str], Awaitable[bool]]

_DEL_OPS = ("DEL", "PURGE")

P = TypeVar("P")


def started(part: P | None) -> P:
    """A part of the alerter that its start() makes (the stores, the engine): needing one
    before that is a bug, not a state to serve requests in."""
    if part is None:
        raise RuntimeError("the alerter is not started")
    return part


def _is_delete(entry) -> bool:
    op = getattr(entry, "operation", None)
    return op is not None and str(getattr(op, "value", op)) in _DEL_OPS


class StateStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self.records: dict[str, AlertRecord] = {}
        self.revisions: dict[str, int] = {}
        self.conflicts = 0  # CAS writes lost to another writer (another instance, or a race here)
        self.leases: dict[str, tuple[Lease, int]] = {}
        self.groups: dict[str, tuple[GroupState, int]] = {}
        self._watch_task: asyncio.Task | None = None
        self._watcher: KeyValue.KeyWatcher | None = None

    def get(self, fp: str) -> AlertRecord | None:
        return self.records.get(fp)

    def _set(self, fp: str, rec: AlertRecord | None, rev: int) -> None:
        if rev < self.revisions.get(fp, 0):
            return
        self.revisions[fp] = rev
        if rec is None:
            self.records.pop(fp, None)
        else:
            self.records[fp] = rec

    def _decode(self, key: str, data: bytes | None) -> AlertRecord | None:
        if not data:
            return None
        try:
            return RECORD.decode(data)
        except Exception as exc:  # a foreign or corrupt value must not stop the alerter
            log.warning("ignoring undecodable alert state", extra={"key": key, "reason": str(exc)})
            return None

    async def start(self) -> None:
        """Load every record, then follow changes made by any instance."""
        watcher = self._watcher = await self.kv.watchall()
        loaded = asyncio.Event()

        async def follow() -> None:
            async for entry in watcher:
                if entry is None:  # end of the initial values
                    loaded.set()
                    continue
                if entry.key.startswith(LEASE_PREFIX):
                    self._set_lease(entry.key, entry.value, entry.revision or 0)
                    continue
                if entry.key.startswith(GROUP_PREFIX):
                    self._set_group(entry.key, entry.value, entry.revision or 0)
                    continue
                rec = None if _is_delete(entry) else self._decode(entry.key, entry.value)
                self._set(entry.key, rec, entry.revision or 0)

        self._watch_task = asyncio.create_task(follow(), name="alert-state-watch")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(loaded.wait(), 10)

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(BaseException):
                await self._watch_task

    def _set_lease(self, key: str, data: bytes | None, rev: int) -> None:
        if rev < self.leases.get(key, (None, 0))[1]:
            return
        try:
            lease = LEASE.decode(data) if data else Lease(owner="", until=0.0)
        except Exception:
            lease = Lease(owner="", until=0.0)
        self.leases[key] = (lease, rev)

    async def try_lease(self, name: str, owner: str, now: float, ttl: float) -> bool:
        """Take or renew the lease on `name`; False while another owner holds it."""
        key = LEASE_PREFIX + name
        cur, rev = self.leases.get(key, (None, 0))
        if cur is not None and cur.owner and cur.owner != owner and cur.until > now:
            return False
        return await self._swap(key, LEASE.encode(Lease(owner=owner, until=now + ttl)), rev, self._set_lease)

    async def _swap(self, key: str, data: bytes, rev: int, cache: Callable[[str, bytes | None, int], None]) -> bool:
        """Compare-and-set `key`; on a lost race the cache gets the winner's value, and False."""
        try:
            rev2 = await self.kv.update(key, data, last=rev)
        except KeyWrongLastSequenceError:
            self.conflicts += 1
            try:
                e = await self.kv.get(key)
                cache(key, e.value, e.revision or 0)
            except KeyNotFoundError:
                pass
            return False
        cache(key, data, rev2)
        return True

    async def release_leases(self, owner: str) -> None:
        """On a clean stop: hand our checks over at once instead of when the leases run out."""
        for key, (lease, rev) in list(self.leases.items()):
            if lease.owner == owner:
                with contextlib.suppress(Exception):
                    await self.kv.update(key, LEASE.encode(Lease(owner="", until=0.0)), last=rev)

    def _set_group(self, key: str, data: bytes | None, rev: int) -> None:
        if rev < self.groups.get(key, (None, 0))[1]:
            return
        try:  # deleted or unreadable: a group that never flushed, at this revision
            group = GROUP.decode(data) if data else NEVER_FLUSHED
        except Exception:
            group = NEVER_FLUSHED
        self.groups[key] = (group, rev)

    def group(self, key: str) -> GroupState | None:
        g = self.groups.get(key)
        return g[0] if g is not None else None

    async def claim_group(self, key: str, owner: str, now: float) -> bool:
        """Open a new flush of group `key` at `now`, by compare-and-set; False when another
        writer changed the group first (the cache then holds what it wrote)."""
        rev = self.groups.get(key, (None, 0))[1]
        return await self._swap(key, GROUP.encode(GroupState(opened=now, owner=owner)), rev, self._set_group)

    async def _fetch(self, fp: str) -> tuple[AlertRecord | None, int]:
        try:
            e = await self.kv.get(fp)
        except KeyNotFoundError as exc:
            entry = getattr(exc, "entry", None)
            return None, (entry.revision if entry is not None and entry.revision else 0)
        rec = self._decode(fp, e.value)
        self._set(fp, rec, e.revision or 0)
        return rec, e.revision or 0

    async def apply(
        self, fp: str, decision: Decision, attempts: int = 4, prepare: Prepare | None = None
    ) -> tuple[AlertRecord, str | None] | None:
        """Write what `decision` makes of the current record; None when it changes nothing or
        another writer already made the change (then the caller must not notify). `prepare`
        runs before a write that notifies (the group's flush); False decides again."""
        cur, rev = self.records.get(fp), self.revisions.get(fp, 0)
        for _ in range(attempts):
            out = decision(cur)
            if out is None:
                return None
            new, kind = out
            if kind and prepare is not None and not await prepare(new, kind):
                continue
            try:
                rev2 = await self.kv.update(fp, RECORD.encode(new), last=rev)
            except KeyWrongLastSequenceError:
                self.conflicts += 1
                cur, rev = await self._fetch(fp)
                continue
            self._set(fp, new, rev2)
            return new, kind
        log.warning("alert state kept changing under us; giving up this evaluation", extra={"fingerprint": fp})
        return None

    async def prune(self, now: float, older_than: float) -> int:
        """Forget alerts that ended (inactive/resolved) more than `older_than` seconds ago.
        The delete is conditional on the revision, so a record that just changed is kept."""
        gone = 0
        for fp, rec in list(self.records.items()):
            if (
                rec.state in ("inactive", "resolved")
                and now - rec.updated > older_than
                and (rec.state == "inactive" or rec.notified != "firing")
            ):
                try:
                    await self.kv.delete(fp, last=self.revisions.get(fp, 0))
                except Exception:  # changed meanwhile (or gone): keep our view until the watch says
                    continue
                self.records.pop(fp, None)
                gone += 1
        return gone

    def active(self, include_inactive: bool = False) -> list[AlertRecord]:
        recs = self.records.values()
        if not include_inactive:
            return sorted((r for r in recs if r.state in ("pending", "firing")), key=_listing_order)
        return sorted(recs, key=_listing_order)


def _listing_order(r: AlertRecord) -> tuple[bool, float]:
    """Firing first, then the most recent change first."""
    return (r.state != "firing", -r.since)


S = TypeVar("S", bound=msgspec.Struct)
ConfigItem = Rule | Check | Silence | Notifier


class Section(dict[str, S]):
    """The stored items of one kind by name, and the codec of their values."""

    def __init__(self, type_: type[S]) -> None:
        super().__init__()
        self.codec = Codec(type_)

    def load(self, name: str, data: bytes) -> None:
        self[name] = self.codec.decode(data)


class ConfigStore:
    def __init__(self, kv: KeyValue, on_change: Callable[[str], None]) -> None:
        self.kv = kv
        self.on_change = on_change
        self.rules = Section(Rule)
        self.checks = Section(Check)
        self.silences = Section(Silence)
        self.notifiers = Section(Notifier)
        # kind (the key's first token) -> its section
        self.sections: dict[str, Section[Rule] | Section[Check] | Section[Silence] | Section[Notifier]] = {
            "rule": self.rules,
            "check": self.checks,
            "silence": self.silences,
            "notifier": self.notifiers,
        }
        self._task: asyncio.Task | None = None
        self._watcher: KeyValue.KeyWatcher | None = None

    def _apply(self, key: str, value: bytes | None, deleted: bool) -> str | None:
        kind, _, name = key.partition(".")
        if kind not in self.sections or not name:
            return None
        if deleted or not value:
            self.sections[kind].pop(name, None)
            return kind
        try:
            self.sections[kind].load(name, value)
        except Exception as exc:
            log.warning("ignoring undecodable alerting config", extra={"key": key, "reason": str(exc)})
            return None
        return kind

    async def start(self) -> None:
        watcher = self._watcher = await self.kv.watchall()
        loaded = asyncio.Event()

        async def follow() -> None:
            async for entry in watcher:
                if entry is None:
                    loaded.set()
                    for each in self.sections:
                        self.on_change(each)
                    continue
                kind = self._apply(entry.key, entry.value, _is_delete(entry))
                if kind and loaded.is_set():
                    self.on_change(kind)

        self._task = asyncio.create_task(follow(), name="alert-config-watch")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(loaded.wait(), 10)

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def put(self, kind: str, name: str, item: ConfigItem) -> None:
        key = f"{kind}.{name}"
        data = encode(item)  # what the kind's codec writes: one encoder serves every type
        await self.kv.put(key, data)
        # Visible to this instance's next read at once; the watch confirms it later.
        if self._apply(key, data, False):
            self.on_change(kind)

    async def delete(self, kind: str, name: str) -> bool:
        if name not in self.sections[kind]:
            with contextlib.suppress(KeyNotFoundError, NoKeysError):
                await self.kv.get(f"{kind}.{name}")
                await self.kv.delete(f"{kind}.{name}")
                self.on_change(kind)
                return True
            return False
        await self.kv.delete(f"{kind}.{name}")
        self._apply(f"{kind}.{name}", None, True)
        self.on_change(kind)
        return True
