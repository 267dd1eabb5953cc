"""Routing, grouping, retries: from "this alert needs a notification" to delivered messages.

A note goes to every enabled notifier whose route matches its labels and severity. Notes for
the same notifier, rule and kind arriving within `group_wait_s` become one message. Each send is
retried with exponential backoff (honouring Telegram's `retry_after`); a notifier that lacks
configuration is skipped with one log line, not an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx
import msgspec

from libs.schemas.alerting import Notifier

from ..machine import match_labels
from ..matchers import SEVERITY_RANK, all_match
from . import transports
from .templates import Note, alert_url, render

log = logging.getLogger("alerter.notify")


class Dispatcher:
    def __init__(
        self,
        *,
        notifiers: Callable[[], list[Notifier]],
        http: httpx.AsyncClient,
        clock: Callable[[], float],
        ui_url: str,
        group_wait_s: float = 0.0,
        attempts: int = 4,
        backoff_s: float = 0.5,
    ) -> None:
        self.notifiers = notifiers
        self.http = http
        self.clock = clock
        self.ui_url = ui_url
        self.group_wait_s = group_wait_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.sent: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self._groups: dict[tuple[str, str, str], list[Note]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._skip_logged: set[tuple[str, str]] = set()

    # --- routing ---

    def _routed(self, n: Notifier, note: Note) -> bool:
        if not n.enabled:
            return False
        if SEVERITY_RANK.get(note.record.severity, 1) < SEVERITY_RANK.get(n.min_severity, 0):
            return False
        return not n.matchers or all_match(n.matchers, match_labels(note.record))

    def _configured(self, n: Notifier) -> bool:
        gap = transports.missing_config(n)
        if gap:
            if (n.name, gap) not in self._skip_logged:
                self._skip_logged.add((n.name, gap))
                log.info(
                    "notifier %s (%s) not configured (%s); skipping it", n.name, n.kind, gap, extra={"notifier": n.name}
                )
            return False
        return True

    def submit(self, note: Note) -> None:
        targets = [n for n in self.notifiers() if self._routed(n, note) and self._configured(n)]
        if not targets:
            r = note.record
            log.warning(
                "alert %s: %s on %s (no notifier to send it to)",
                note.kind,
                r.rule,
                r.host,
                extra={"fingerprint": r.fingerprint, "state": r.state},
            )
            return
        for n in targets:
            if self.group_wait_s <= 0:
                self._spawn(self._deliver(n.name, [note]))
                continue
            key = (n.name, note.kind, note.record.rule)
            group = self._groups.get(key)
            if group is not None:
                group.append(note)
                continue
            self._groups[key] = [note]
            self._spawn(self._flush_later(key))

    def _spawn(self, coro) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _flush_later(self, key: tuple[str, str, str]) -> None:
        await asyncio.sleep(self.group_wait_s)
        notes = self._groups.pop(key, [])
        if notes:
            await self._deliver(key[0], notes)

    def _lookup(self, name: str) -> Notifier | None:
        for n in self.notifiers():
            if n.name == name:
                return n
        return None

    async def _deliver(self, name: str, notes: list[Note]) -> None:
        n = self._lookup(name)
        if n is None:
            log.warning("notifier %s removed before sending", name)
            return
        try:
            err = await self.send(n, notes)
        except Exception as exc:  # a bug or an odd input must cost one notification, not the task
            log.exception("notification via %s crashed", name)
            err = f"{type(exc).__name__}"
        if err:
            self.failed[name] = self.failed.get(name, 0) + 1
            log.error("notification via %s failed: %s", name, err, extra={"notifier": name, "alerts": len(notes)})
        else:
            self.sent[name] = self.sent.get(name, 0) + 1
            log.info(
                "notified via %s",
                name,
                extra={
                    "notifier": name,
                    "kind": notes[0].kind,
                    "alerts": len(notes),
                    "fingerprint": notes[0].record.fingerprint,
                },
            )

    # --- sending ---

    async def _once(self, n: Notifier, subject: str, text: str, notes: list[Note]) -> None:
        if n.kind == "telegram":
            await transports.send_telegram(self.http, n, subject, text)
        elif n.kind == "email":
            await transports.send_email(n, subject, text)
        else:
            ui = self.ui_url.rstrip("/")
            payload = {
                "version": 1,
                "status": notes[0].kind,
                "subject": subject,
                "text": text,
                "alerts": [
                    {
                        **msgspec.to_builtins(x.record),
                        "notification": x.kind,
                        "url": alert_url(ui, x.record.fingerprint),
                    }
                    for x in notes
                ],
            }
            await transports.send_webhook(self.http, n, payload)

    async def send(self, n: Notifier, notes: list[Note]) -> str:
        """Send with retries; '' on success, else the (secret-free) reason of the last failure."""
        gap = transports.missing_config(n)
        if gap:
            return f"notifier {n.name} not configured ({gap})"
        subject, text = render(notes, self.clock(), self.ui_url)
        delay = self.backoff_s
        last = ""
        for attempt in range(1, self.attempts + 1):
            try:
                await self._once(n, subject, text, notes)
                return ""
            except transports.Permanent as exc:
                return str(exc)
            except transports.Retryable as exc:
                last = str(exc)
                if attempt == self.attempts:
                    break
                wait = min(max(delay, exc.retry_after or 0.0), 60.0)
                log.warning(
                    "notification via %s failed (attempt %d/%d): %s; retrying in %.1fs",
                    n.name,
                    attempt,
                    self.attempts,
                    last,
                    wait,
                    extra={"notifier": n.name},
                )
                await asyncio.sleep(wait)
                delay *= 2
        return last

    async def send_text(self, n: Notifier, text: str) -> str:
        """A test message through one notifier (the API's test-send)."""
        from libs.schemas.alerting import AlertRecord

        now = self.clock()
        rec = AlertRecord(
            fingerprint="test",
            rule="test",
            kind="test",
            host="_fleet",
            state="firing",
            since=now,
            active_since=now,
            severity="info",
            summary=text,
        )
        return await self.send(n, [Note(record=rec, kind="test")])

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until every queued and in-flight notification is done (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.01, deadline - loop.time()))

    async def stop(self, timeout: float = 10.0) -> None:
        await self.idle(timeout)
        for t in list(self._tasks):
            t.cancel()
