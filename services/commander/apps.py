"""The app operations: register, remove, start, stop, restart, status, list — each on the
backend the app's spec names, with the registry kept in the store and every change of state
sent to the status publisher."""

from __future__ import annotations

import logging

import msgspec

from libs.runtime import mask_mapping
from libs.schemas.control import AppInfo, AppListReply, AppListRequest, AppRegisterRequest, AppReply, AppRequest

from .backend import Backend
from .errors import CtlError, bad, conflict, not_found
from .follow import LogFollows
from .policy import RunAs
from .status import StatusPublisher
from .store import AppRecord, Store

log = logging.getLogger("commander")


class Apps:
    def __init__(
        self,
        host: str,
        store: Store,
        run_as: RunAs,
        backends: dict[str, Backend],
        status: StatusPublisher,
        follows: LogFollows,
    ) -> None:
        self.host = host
        self.store = store
        self.run_as = run_as
        self.backends = backends  # spec.backend -> the Backend that runs such apps
        self.status = status
        self.follows = follows
        self.records: dict[str, AppRecord] = {}
        self.argv: dict[str, list[str]] = {}

    def backend(self, rec: AppRecord) -> Backend:
        return self.backends[rec.spec.backend]

    def persist(self) -> None:
        self.store.save(self.records)

    def load(self) -> None:
        """After a commander (re)start: the registered apps, taken up by their backends."""
        try:
            self.records = self.store.load()
        except RuntimeError as exc:
            log.error("%s", exc)
            self.records = {}
        for name, rec in self.records.items():
            try:
                self.argv[name] = self.run_as.argv_of(rec)
            except CtlError as exc:
                log.error("registered app %s is no longer valid: %s", name, exc.message, extra={"app": name})
                self.argv[name] = []
                continue
            self.backend(rec).load(rec, self.argv[name], self.store.rebooted)
        self.persist()

    def record(self, name: str) -> AppRecord:
        rec = self.records.get(name)
        if rec is None:
            raise not_found(f"no app named {name!r} on host {self.host}")
        return rec

    async def info(self, rec: AppRecord) -> AppInfo:
        info = await self.backend(rec).info(rec, self.argv.get(rec.spec.name, []))
        if info.spec.env:  # replies and events never carry secret values
            info = msgspec.structs.replace(
                info, spec=msgspec.structs.replace(info.spec, env=mask_mapping(dict(info.spec.env)))
            )
        return info

    async def reply(self, rec: AppRecord) -> AppReply:
        info = await self.info(rec)
        self.status.changed(info)
        return AppReply(app=info)

    async def reconcile(self) -> None:
        for name, rec in list(self.records.items()):
            try:
                self.status.changed(await self.info(rec))
            except CtlError as exc:
                log.warning("reconcile %s: %s", name, exc.message)
            except Exception:
                log.exception("reconcile %s failed", name)

    async def list(self, r: AppListRequest) -> AppListReply:
        return AppListReply(host=self.host, apps=[await self.info(rec) for rec in self.records.values()])

    async def register(self, r: AppRegisterRequest) -> AppReply:
        spec, argv = self.run_as.app(r.role, r.policy, r.spec, r.adopt_pid)
        rec = AppRecord(spec=spec, desired="stopped")
        backend = self.backend(rec)
        if r.adopt_pid is not None and not backend.adopts:
            raise bad(f"adopt_pid works with the process backend only ({backend.name} owns its units' processes)")
        old = self.records.get(spec.name)
        if old is not None:
            if not r.replace:
                raise conflict(f"an app named {spec.name!r} is already registered; pass replace=true to change it")
            await self._teardown(old)
        await backend.install(rec, argv)
        self.records[spec.name] = rec
        self.argv[spec.name] = argv
        self.persist()
        if r.adopt_pid is not None:
            try:
                await backend.adopt(rec, r.adopt_pid)
            except CtlError:
                await backend.remove(rec)
                del self.records[spec.name]
                self.persist()
                raise
        elif r.start:
            await backend.start(rec)
            self.persist()
        return await self.reply(rec)

    async def _teardown(self, rec: AppRecord) -> None:
        await self.backend(rec).remove(rec)
        self.follows.cancel(rec.spec.name)

    async def remove(self, r: AppRequest) -> AppReply:
        rec = self.record(r.name)
        await self._teardown(rec)
        del self.records[r.name]
        self.argv.pop(r.name, None)
        self.status.forget(r.name)
        self.persist()
        return AppReply(app=AppInfo(spec=rec.spec, state="removed"))

    async def start(self, r: AppRequest) -> AppReply:
        rec = self.record(r.name)
        await self.backend(rec).start(rec)
        self.persist()
        return await self.reply(rec)

    async def stop(self, r: AppRequest) -> AppReply:
        rec = self.record(r.name)
        await self.backend(rec).stop(rec)
        self.persist()
        return await self.reply(rec)

    async def restart(self, r: AppRequest) -> AppReply:
        rec = self.record(r.name)
        await self.backend(rec).restart(rec)
        self.persist()
        return await self.reply(rec)

    async def status_of(self, r: AppRequest) -> AppReply:
        return AppReply(app=await self.info(self.record(r.name)))
