"""Waiting in tests, one way: `eventually` asks a predicate again and again until it returns
something truthy and returns that; when time runs out it RAISES AssertionError naming what it
waited for and the last value seen. A wait that times out therefore always fails its test:
there is no False to forget to assert.

`never` is the opposite check, for "this must not happen": it watches for a bounded time and
raises as soon as the predicate holds.

The predicate may be a plain function or a coroutine function (`eventually` awaits what it
returns). Pauses start short and grow by half up to `interval`, so a quick condition is seen
at once and a slow one (a database query, a subprocess starting) is not asked twenty times a
second; pass `interval=FIRST_PAUSE_S` for a fixed, quick pace where a test measures how soon
something happened."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

FIRST_PAUSE_S = 0.05


def _describe(pred: Callable[[], Any], what: str | None) -> str:
    if what:
        return what
    name = getattr(pred, "__qualname__", repr(pred))
    if name.endswith("<lambda>"):
        # A lambda has no name: its source line says more than "<lambda>".
        try:
            return " ".join(inspect.getsource(pred).split())[:200]
        except (OSError, TypeError):
            pass
    return name


def _timed_out(
    pred: Callable[[], Any], timeout: float, what: str | None, last: object, context: Callable[[], object] | None
) -> str:
    msg = f"timed out after {timeout}s waiting for {_describe(pred, what)} (last: {last!r})"
    if context is not None:
        # Evaluated only now, so a log tail or the items collected are those at the failure.
        msg += f"\n{context()}"
    return msg


def _pauses(interval: float):
    pause = min(FIRST_PAUSE_S, interval)
    while True:
        yield pause
        pause = min(pause * 1.5, interval)


async def eventually(
    pred: Callable[[], Any],
    timeout: float = 10.0,
    *,
    interval: float = 0.25,
    what: str | None = None,
    context: Callable[[], object] | None = None,
) -> Any:
    """The first truthy value `pred()` returns within `timeout` seconds (it is asked once more
    at the deadline); AssertionError otherwise. `what` names the wait in the error (default: the
    predicate's source); `context()`, if given, is added to the error (logs, what was seen)."""
    deadline = time.monotonic() + timeout
    pauses = _pauses(interval)
    while True:
        last = pred()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(_timed_out(pred, timeout, what, last, context))
        await asyncio.sleep(min(next(pauses), left))


def eventually_sync(
    pred: Callable[[], Any],
    timeout: float = 10.0,
    *,
    interval: float = 0.25,
    what: str | None = None,
    context: Callable[[], object] | None = None,
) -> Any:
    """`eventually` for code without an event loop (a sync test, a sync fixture): it blocks
    the thread between tries, so never call it from a coroutine."""
    deadline = time.monotonic() + timeout
    pauses = _pauses(interval)
    while True:
        last = pred()
        if last:
            return last
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(_timed_out(pred, timeout, what, last, context))
        time.sleep(min(next(pauses), left))


async def never(
    pred: Callable[[], Any],
    within: float,
    *,
    interval: float = 0.05,
    what: str | None = None,
    context: Callable[[], object] | None = None,
) -> None:
    """Watch `pred` for `within` seconds (asked at least at the start and at the end); raise
    AssertionError with its value as soon as it is truthy: something that must NOT happen."""
    deadline = time.monotonic() + within
    while True:
        got = pred()
        if inspect.isawaitable(got):
            got = await got
        if got:
            msg = f"{_describe(pred, what)} happened within {within}s (got: {got!r})"
            raise AssertionError(msg + (f"\n{context()}" if context is not None else ""))
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(min(interval, left))
