"""Label matchers (Alertmanager style) for silences and notifier routes."""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache

from libs.schemas.alerting import Matcher, Silence

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def check_matcher(m: Matcher) -> None:
    """ValueError with a reason when a matcher cannot be used."""
    if not m.name:
        raise ValueError("matcher needs a label name")
    if m.op in ("=~", "!~"):
        try:
            _regex(m.value)
        except re.error as exc:
            raise ValueError(f"matcher {m.name}{m.op}{m.value!r}: bad regex ({exc})") from None


def matches(m: Matcher, labels: dict[str, str]) -> bool:
    v = labels.get(m.name, "")
    if m.op == "=":
        return v == m.value
    if m.op == "!=":
        return v != m.value
    hit = _regex(m.value).fullmatch(v) is not None
    return hit if m.op == "=~" else not hit


def all_match(ms: list[Matcher], labels: dict[str, str]) -> bool:
    return all(matches(m, labels) for m in ms)


def silenced_by(silences: list[Silence], labels: dict[str, str], now: float) -> Silence | None:
    for s in silences:
        if s.starts <= now < s.ends and s.matchers and all_match(s.matchers, labels):
            return s
    return None


def host_selected(patterns: list[str], host: str) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(host, p) for p in patterns)
