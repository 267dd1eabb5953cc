"""Waiting for a signalled process to go, for as long as it may take to stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until_gone(alive: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    """Poll `alive()` every `step_s` until it is false or `timeout_s` passed; True once gone.

    Polling on purpose, there is nothing to await: the commander's children are
    `subprocess.Popen`s (reaped by `poll()`, not by an asyncio child watcher), and processes
    adopted after a commander restart are not its children at all, so their exit raises no
    event anywhere."""
    deadline = time.monotonic() + timeout_s
    while alive() and time.monotonic() < deadline:  # noqa: ASYNC110 - no exit event (see above)
        await asyncio.sleep(step_s)
    return not alive()
