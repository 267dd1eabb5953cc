"""Per-app log files: size rotation (copy + truncate, so a child writing with O_APPEND keeps
going), tail of the last N lines, reading what was appended since an offset, and the lines of
an app's log (logtee's format) with the time and stream of each."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncGenerator
from pathlib import Path

from libs.schemas import LogLine
from libs.schemas.control import LogLineOut

MAX_TAIL = 5000


def open_for_child(path: Path) -> int:
    """A file descriptor the child inherits as stdout and stderr (O_APPEND survives truncation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)


def rotate_if_needed(path: Path, max_bytes: int, backups: int) -> bool:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size <= max_bytes:
        return False
    for i in range(backups - 1, 0, -1):
        src = path.with_name(f"{path.name}.{i}")
        if src.exists():
            src.replace(path.with_name(f"{path.name}.{i + 1}"))
    if backups > 0:
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with open(path, "r+b") as f:
        f.truncate(0)
    return True


def tail(path: Path, n: int) -> list[str]:
    n = max(0, min(n, MAX_TAIL))
    if n == 0:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            block = 8192
            data = b""
            pos = end
            while pos > 0 and data.count(b"\n") <= n:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-n:]


class Follower:
    """Reads complete lines appended to a file since the last call (handles truncation)."""

    def __init__(self, path: Path, from_end: bool = True) -> None:
        self.path = path
        self.offset = 0
        self._partial = b""
        if from_end:
            try:
                self.offset = path.stat().st_size
            except FileNotFoundError:
                self.offset = 0

    def read_new(self, limit: int = 1 << 20) -> list[str]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:  # rotated (truncated): start again from the beginning
            self.offset = 0
            self._partial = b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(min(size - self.offset, limit))
        self.offset += len(chunk)
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        return [c.decode("utf-8", "replace") for c in complete]


STREAMS = {"out": "stdout", "err": "stderr"}


def parse(raw: str, fallback_ts: float) -> tuple[float, str, str]:
    """(ts, stream, text) of a line logtee wrote (`<unix time> <out|err> <text>`). A line that is
    not one (a log file from before logtee) keeps `fallback_ts` and counts as stdout."""
    ts, _, rest = raw.partition(" ")
    tag, _, text = rest.partition(" ")
    stream = STREAMS.get(tag)
    if stream is not None:
        try:
            return float(ts), stream, text
        except ValueError:
            pass
    return fallback_ts, "stdout", raw


def tail_lines(path: Path, n: int) -> list[LogLineOut]:
    """The last `n` lines of an app's log, with the time and stream logtee wrote them with."""
    now = time.time()
    out = []
    for raw in tail(path, n):
        ts, stream, text = parse(raw, now)
        out.append(LogLineOut(ts=ts, line=text, stream=stream))
    return out


async def follow(path: Path, interval_s: float) -> AsyncGenerator[list[LogLine], None]:
    """Lines appended to `path` from now on, a batch every `interval_s` (empty when none)."""
    follower = Follower(path)
    while True:
        now = time.time()
        batch = []
        for raw in follower.read_new():
            ts, stream, text = parse(raw, now)
            batch.append(LogLine(ts=ts, line=text, stream=stream))
        yield batch
        await asyncio.sleep(interval_s)
