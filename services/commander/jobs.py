"""Ad-hoc one-shot commands: run with a timeout, at most N at once per host, output kept in a
log file per job, metadata kept next to it so a commander restart still lists old jobs."""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from libs.schemas.control import JobInfo

from . import logfiles
from .errors import CtlError, conflict, not_found
from .exits import until_gone

_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder(JobInfo)
FINISHED = ("succeeded", "failed", "timeout", "stopped")
# A listing shows each job's command line shortened to this (jobs.get has it whole): one reply
# carries up to 1000 jobs and must stay within the server's max_payload, or every viewer's
# /jobs fails until the big jobs are cleaned up.
LIST_ARGS = 32
LIST_ARG_CHARS = 256


def brief(info: JobInfo) -> JobInfo:
    """`info` with a long argv cut down for a listing; the cut is said in the argv itself."""
    argv = info.argv
    if len(argv) <= LIST_ARGS and all(len(a) <= LIST_ARG_CHARS for a in argv):
        return info
    shown = [
        a if len(a) <= LIST_ARG_CHARS else f"{a[:LIST_ARG_CHARS]}…(+{len(a) - LIST_ARG_CHARS} chars)" for a in argv
    ]
    shown = shown[:LIST_ARGS]
    if len(argv) > LIST_ARGS:
        shown.append(f"…(+{len(argv) - LIST_ARGS} more arguments)")
    return msgspec.structs.replace(info, argv=shown)


def new_job_id(now: float | None = None) -> str:
    t = time.gmtime(now if now is not None else time.time())
    return time.strftime("job_%Y%m%d_%H%M%S_", t) + secrets.token_hex(3)


class Job:
    def __init__(self, info: JobInfo, argv: list[str], env: dict[str, str], timeout_s: float) -> None:
        self.info = info
        self.argv = argv
        self.env = env
        self.timeout_s = timeout_s
        self.popen: subprocess.Popen | None = None
        self.stop_requested = False
        self.task: asyncio.Task | None = None


class JobRunner:
    def __init__(self, jobs_dir: Path, concurrency: int, max_timeout_s: float, poll_s: float = 0.05) -> None:
        self.dir = jobs_dir
        self.concurrency = concurrency
        self.max_timeout_s = max_timeout_s
        self.poll_s = poll_s
        self.jobs: dict[str, Job] = {}
        self._load()

    def _load(self) -> None:
        for meta in sorted(self.dir.glob("job_*.json")):
            try:
                info = _DEC.decode(meta.read_bytes())
            except (msgspec.DecodeError, OSError):
                continue
            if info.state in ("queued", "running"):  # the commander died under it: we lost the child
                info = msgspec.structs.replace(info, state="failed", detail="commander restarted while the job ran")
            self.jobs[info.id] = Job(info, info.argv, {}, 0)

    def _save(self, job: Job) -> None:
        (self.dir / f"{job.info.id}.json").write_bytes(_ENC.encode(job.info))

    def log_path(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.log"

    def running(self) -> int:
        return sum(1 for j in self.jobs.values() if j.info.state == "running")

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise not_found(f"no job {job_id!r} on this host")
        return job

    def recent(self, limit: int, max_bytes: int | None = None) -> list[JobInfo]:
        """The newest `limit` jobs (at most 1000), newest first, argv shortened (`brief`); with
        `max_bytes`, only as many as encode within it (older ones are left out). The commander
        passes half the server's max_payload: a reply over it would never arrive."""
        infos = sorted((j.info for j in self.jobs.values()), key=lambda i: i.created, reverse=True)
        out: list[JobInfo] = []
        size = 0
        for info in infos[: max(0, min(limit, 1000))]:
            shown = brief(info)
            if max_bytes is not None:
                size += len(_ENC.encode(shown)) + 1
                if size > max_bytes:
                    break
            out.append(shown)
        return out

    async def run(
        self,
        argv: list[str],
        shown_argv: list[str],
        cwd: str,
        user: str,
        env: dict[str, str],
        timeout_s: float,
        actor: str,
    ) -> JobInfo:
        if self.running() >= self.concurrency:
            raise CtlError(
                429, f"{self.concurrency} jobs are already running on this host; try again when one finishes"
            )
        if timeout_s <= 0 or timeout_s > self.max_timeout_s:
            raise CtlError(400, f"timeout_s must be in (0, {self.max_timeout_s:g}]")
        job_id = new_job_id()
        while job_id in self.jobs:
            job_id = new_job_id()
        info = JobInfo(
            id=job_id,
            argv=shown_argv,
            state="running",
            cwd=cwd,
            user=user,
            created=time.time(),
            started=time.time(),
            actor=actor,
        )
        job = Job(info, argv, env, timeout_s)
        self.jobs[job_id] = job
        self._spawn(job)
        job.task = asyncio.create_task(self._watch(job), name=f"job-{job_id}")
        return job.info

    def _spawn(self, job: Job) -> None:
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONUNBUFFERED": "1",
        }
        kw: dict = {}
        if job.info.user:
            pw = pwd.getpwnam(job.info.user)
            full_env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
            if pw.pw_uid != os.geteuid():
                kw.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        full_env.update(job.env)
        fd = logfiles.open_for_child(self.log_path(job.info.id))
        try:
            job.popen = subprocess.Popen(
                job.argv,
                cwd=job.info.cwd or None,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                start_new_session=True,
                close_fds=True,
                **kw,
            )
        except OSError as exc:
            job.info = msgspec.structs.replace(
                job.info,
                state="failed",
                finished=time.time(),
                duration_s=0.0,
                detail=f"could not start: {exc.strerror or exc}",
            )
            self._save(job)
            return
        finally:
            os.close(fd)
        job.info = msgspec.structs.replace(job.info, pid=job.popen.pid)
        self._save(job)

    async def _watch(self, job: Job) -> None:
        if job.popen is None:
            return
        deadline = time.monotonic() + job.timeout_s
        timed_out = False
        while job.popen.poll() is None:
            if time.monotonic() >= deadline and not timed_out:
                timed_out = True
                await self._kill(job)
                break
            await asyncio.sleep(self.poll_s)
        code = job.popen.wait()
        if timed_out:
            state, detail = "timeout", f"killed after the {job.timeout_s:g}s timeout"
        elif job.stop_requested:
            state, detail = "stopped", "stopped on request"
        else:
            state, detail = ("succeeded" if code == 0 else "failed"), ""
        now = time.time()
        job.info = msgspec.structs.replace(
            job.info,
            state=state,
            exit_code=code,
            finished=now,
            duration_s=round(now - (job.info.started or now), 3),
            detail=detail,
        )
        self._save(job)

    async def _kill(self, job: Job, grace_s: float = 5.0) -> None:
        p = job.popen
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not await until_gone(lambda: p.poll() is None, grace_s):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def stop(self, job_id: str) -> JobInfo:
        job = self.get(job_id)
        if job.info.state != "running":
            raise conflict(f"job {job_id} is not running ({job.info.state})")
        job.stop_requested = True
        await self._kill(job)
        if job.task:
            await asyncio.wait_for(asyncio.shield(job.task), 15)
        return job.info

    async def restart(self, job_id: str, actor: str, check: Callable[..., tuple[list[str], str]]) -> JobInfo:
        """Run a job's command again; `check(argv, cwd, user, env)` applies the rules of whoever
        asks now (an operator must not rerun, as root, what an admin once ran)."""
        job = self.get(job_id)
        if not job.argv or not job.timeout_s:
            raise conflict(f"job {job_id} ran before the commander restarted; run it again with jobs.run")
        argv, user = check(list(job.info.argv), job.info.cwd, job.info.user, dict(job.env))
        if job.info.state == "running":
            await self.stop(job_id)
        return await self.run(argv, job.info.argv, job.info.cwd, user, job.env, job.timeout_s, actor)

    def logs(self, job_id: str, lines: int) -> list[str]:
        self.get(job_id)
        return logfiles.tail(self.log_path(job_id), lines)

    def cleanup(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        for job_id, job in list(self.jobs.items()):
            if job.info.state in FINISHED and (job.info.finished or job.info.created) < cutoff:
                for p in (self.log_path(job_id), self.dir / f"{job_id}.json"):
                    p.unlink(missing_ok=True)
                del self.jobs[job_id]
                removed += 1
        return removed

    async def close(self) -> None:
        for job in self.jobs.values():
            if job.task and not job.task.done():
                job.task.cancel()
