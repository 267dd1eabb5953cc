"""Per-app log files: size rotation (copy + truncate, so a child writing with O_APPEND keeps
going), tail of the last N lines, and reading what was appended since an offset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
