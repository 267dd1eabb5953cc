"""What the commander asks of the thing that runs an app: the process backend (the commander
supervises the program itself) or the systemd backend (a unit per app). The service picks an
app's backend once, by `spec.backend`, and calls it; whatever differs lives behind this."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from libs.schemas import LogLine
from libs.schemas.control import AppInfo, LogLineOut

from .store import AppRecord


class Backend(Protocol):
    name: str
    adopts: bool  # whether apps.register may adopt a process started elsewhere (adopt_pid)

    def load(self, rec: AppRecord, argv: list[str], rebooted: bool) -> None:
        """A registered app, after a commander (re)start: take it up again."""

    async def install(self, rec: AppRecord, argv: list[str]) -> None:
        """A new registration (not started)."""

    async def adopt(self, rec: AppRecord, pid: int) -> None:
        """Supervise process `pid` as the (installed) app; CtlError when it is not the app."""

    async def remove(self, rec: AppRecord) -> None:
        """Stop the app if it runs and forget it (re-register or remove)."""

    async def start(self, rec: AppRecord) -> None: ...

    async def stop(self, rec: AppRecord) -> None: ...

    async def restart(self, rec: AppRecord) -> None: ...

    async def info(self, rec: AppRecord, argv: list[str]) -> AppInfo: ...

    async def tail(self, name: str, n: int) -> list[LogLineOut]:
        """The last `n` lines, each with the time it was written and its stream."""

    def follow(self, name: str, interval_s: float) -> AsyncGenerator[list[LogLine], None]:
        """Lines written from now on, a batch (maybe empty) at least every `interval_s`; the
        caller ends it with aclose()."""

    def managed_pids(self) -> set[int]:
        """Processes of the apps it runs (procs.scan leaves them out)."""
