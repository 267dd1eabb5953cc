"""Per-second rates from monotonically increasing counters that may reset (reboot, driver
reload, interface re-created, 32-bit wrap)."""

from __future__ import annotations


class Rates:
    """Remembers the last value of each counter; `rate` turns the next value into a rate.

    A counter that went down was reset: what it counts since the reset is its current value,
    so that is the delta (the same rule as Prometheus' rate()).
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[object, float] = {}

    def rate(self, key: object, value: float, elapsed: float) -> float:
        prev = self._last.get(key)
        self._last[key] = value
        if prev is None or elapsed <= 0:
            return 0.0
        delta = value - prev
        if delta < 0:
            delta = value
        return delta / elapsed

    def forget_missing(self, present: set) -> None:
        """Drop counters of things that disappeared, so the dict never grows without bound."""
        for k in [k for k in self._last if (k[0] if isinstance(k, tuple) else k) not in present]:
            del self._last[k]
