"""The commander's local state: registered apps (spec + what is needed to re-adopt their
processes) in one JSON file, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import psutil

from libs.schemas.control import AppSpec


class AppRecord(msgspec.Struct, kw_only=True):
    spec: AppSpec
    desired: str = "stopped"  # running | stopped: what the last accepted request asked for
    pid: int | None = None
    create_time: float | None = None  # with pid: recognises the same process after a restart
    restarts: int = 0
    fatal: bool = False


class StateFile(msgspec.Struct, kw_only=True):
    apps: dict[str, AppRecord] = {}
    boot_time: float = 0.0  # the machine's boot when written: tells a reboot from a commander restart


_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder(StateFile)


class Store:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)  # app environments may hold secrets
        self.path = self.dir / "apps.json"
        self.rebooted = False

    def load(self) -> dict[str, AppRecord]:
        self.rebooted = False
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            state = _DEC.decode(data)
            self.rebooted = abs(state.boot_time - psutil.boot_time()) > 2.0
            return dict(state.apps)
        except msgspec.DecodeError as exc:
            # Keep the unreadable file for a human; start with nothing rather than crash.
            self.path.replace(self.path.with_suffix(".corrupt"))
            raise RuntimeError(f"state file unreadable, moved aside: {exc}") from None

    def save(self, apps: dict[str, AppRecord]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(_ENC.encode(StateFile(apps=apps, boot_time=psutil.boot_time())))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)

    def logs_dir(self) -> Path:
        d = self.dir / "logs"
        d.mkdir(exist_ok=True)
        return d

    def jobs_dir(self) -> Path:
        d = self.dir / "jobs"
        d.mkdir(exist_ok=True)
        return d


def record_to_builtins(rec: AppRecord) -> dict[str, Any]:
    return msgspec.to_builtins(rec)
