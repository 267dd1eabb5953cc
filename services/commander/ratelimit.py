"""One operation per app per interval: a second `restart` within the second is refused (429)."""

from __future__ import annotations

import time


class RateLimiter:
    def __init__(self, interval_s: float, clock=time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}

    def allow(self, key: str) -> float:
        """0 when allowed (and recorded), else the seconds to wait."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            return self.interval_s - (now - last)
        self._last[key] = now
        if len(self._last) > 10000:  # names are bounded by registered apps; this bounds junk names
            cutoff = now - self.interval_s
            self._last = {k: v for k, v in self._last.items() if v >= cutoff}
        return 0.0
