"""The collector service: frames every `interval`, snapshots every `procs_interval`, host info
at start and hourly, fresh frames on request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from libs.runtime import ServiceStats, deadletter, open_stats
from libs.schemas import Codec, DecodeError, HostInfo, MetricFrame, ProcessSnapshot, subjects
from libs.schemas.streams import HOSTS_BUCKET

from .config import CollectorConfig
from .gpu import Gpus
from .hostinfo import host_info
from .outbox import Outbox
from .processes import ProcessTable
from .system import SystemSampler

log = logging.getLogger("fleetwatch.collector")

FRAME = Codec(MetricFrame)
SNAPSHOT = Codec(ProcessSnapshot)
HOSTINFO = Codec(HostInfo)
SAMPLE_REQUEST = Codec(dict)


class Sampler:
    """Everything that reads the host; blocking (psutil), so the service runs it in a thread."""

    def __init__(self, config: CollectorConfig, host: str, gpus: Gpus) -> None:
        self.config = config
        self.host = host
        self.gpus = gpus
        self.system = SystemSampler(config.freq_every)
        self.procs = ProcessTable(config.cmdline_max)
        self.boot = int(time.time() * 1000)
        self.seq = 0
        self.snap_seq = 0
        self.last_gpu_mem: dict[int, int] = {}

    def prime(self) -> None:
        """Take the counter baselines so the first frame already has real rates."""
        self.system.sample()
        self.procs.scan(with_memory=True)

    def frame(self, *, seq: int | None = None, with_memory: bool = False) -> MetricFrame:
        parts = self.system.sample()
        gpus = self.gpus.sample()
        self.last_gpu_mem = Gpus.process_memory(gpus)
        counts = self.procs.scan(with_memory=with_memory)
        if seq is None:
            self.seq += 1
            seq = self.seq
        return MetricFrame(
            host=self.host,
            ts=time.time(),
            boot=self.boot,
            seq=seq,
            interval=self.config.interval,
            gpus=gpus,
            procs=counts,
            **parts,
        )

    def snapshot(self) -> ProcessSnapshot:
        """Top processes as of the last scan (run right after a frame scanned with memory)."""
        self.snap_seq += 1
        top = self.procs.top(self.config.top_n, self.last_gpu_mem)
        return ProcessSnapshot(
            host=self.host, ts=time.time(), boot=self.boot, seq=self.snap_seq, total=len(self.procs), procs=top
        )

    def info(self) -> HostInfo:
        return host_info(self.host, self.gpus.info(), self.config.host.labels)


class Collector:
    def __init__(self, config: CollectorConfig, nc: NATS, gpus: Gpus) -> None:
        self.config = config
        self.nc = nc
        self.host = config.host.host_id
        self.sampler = Sampler(config, self.host, gpus)
        # JetStream's duplicate window spans the whole stream, so a Nats-Msg-Id any viewer could
        # work out (host, boot and seq are on /api/v1/hosts) lets another host's agent publish
        # it first and have this host's message dropped as a duplicate. The ids carry a secret
        # of this process instead: a retry after a lost ack still dedupes, nobody else can aim.
        self.id_key = secrets.token_hex(16)
        self.frames = Outbox(nc, "frames", config.buffer_frames, config.publish_timeout)
        self.snapshots = Outbox(nc, "snapshots", config.snapshot_buffer, config.publish_timeout)
        self.infos = Outbox(nc, "hostinfo", 2, config.publish_timeout)
        self.stats = ServiceStats()
        for box in (self.frames, self.snapshots, self.infos):
            self._report(box)
        self.stats.gauge("buffered_frames", lambda: len(self.frames))
        self._lock = asyncio.Lock()  # one sampler, used by the loop and by sample requests
        self._tasks: list[asyncio.Task] = []
        self._sub: Subscription | None = None

    def msg_id(self, what: str) -> str:
        """`<host>:<secret>:<what>`: unique per message of this process, unguessable to others."""
        return f"{self.host}:{self.id_key}:{what}"

    def _report(self, box: Outbox) -> None:
        """The outbox's counters and queue length in the service stats."""
        self.stats.counter("messages_out", lambda: box.published)
        self.stats.counter(f"{box.name}_published", lambda: box.published)
        self.stats.counter("errors", lambda: box.errors)
        self.stats.counter("dropped", lambda: box.dropped)
        self.stats.queue(box.name, lambda: len(box))

    async def _in_thread(self, fn, *args, **kwargs):
        async with self._lock:
            return await asyncio.to_thread(fn, *args, **kwargs)

    async def start(self) -> None:
        await self._in_thread(self.sampler.prime)
        self._sub = await self.nc.subscribe(subjects.sample(self.host), cb=self._on_sample)
        for box in (self.frames, self.snapshots, self.infos):
            self._tasks.append(asyncio.create_task(box.run(), name=f"outbox-{box.name}"))
        self._tasks.append(asyncio.create_task(self._frames_loop(), name="frames"))
        self._tasks.append(asyncio.create_task(self._hostinfo_loop(), name="hostinfo"))
        log.info(
            "collector started", extra={"host": self.host, "interval": self.config.interval, "boot": self.sampler.boot}
        )

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        self.sampler.gpus.close()

    async def _frames_loop(self) -> None:
        interval = self.config.interval
        every = max(1, round(self.config.procs_interval / interval))
        next_t = time.monotonic() + interval
        n = 0
        while True:
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            # A late wake-up (suspended VM, overloaded box) skips missed slots instead of bursting.
            next_t += interval * max(1, int((time.monotonic() - next_t) // interval) + 1)
            n += 1
            snap = n % every == 0
            try:
                frame = await self._in_thread(self.sampler.frame, with_memory=snap)
                self.stats.inc("frames_sampled")
                self.frames.put(subjects.metrics(self.host), FRAME.encode(frame), self.msg_id(f"f{frame.seq}"))
                if snap:
                    s = await self._in_thread(self.sampler.snapshot)
                    self.snapshots.put(subjects.procs(self.host), SNAPSHOT.encode(s), self.msg_id(f"p{s.seq}"))
            except Exception:  # a sampling failure costs one frame, never the service
                self.stats.inc("errors")
                log.exception("sampling failed")

    async def _hostinfo_loop(self) -> None:
        kv_subject = f"$KV.{HOSTS_BUCKET.bucket}.{self.host}"
        while True:
            try:
                info = await self._in_thread(self.sampler.info)
                data = HOSTINFO.encode(info)
                mid = self.msg_id(f"h{int(info.ts)}")
                self.infos.put(subjects.hosts(self.host), data, mid)
                self.infos.put(kv_subject, data, mid + ":kv")
            except Exception:
                log.exception("host info failed")
            await asyncio.sleep(self.config.hostinfo_interval)

    async def _on_sample(self, msg) -> None:
        if not msg.reply:
            return
        self.stats.inc("messages_in")
        # The body is empty today; a JSON object (a newer caller's options) is welcome, anything
        # else is a caller's mistake worth telling it about.
        if msg.data.strip():
            try:
                SAMPLE_REQUEST.decode(msg.data)
            except DecodeError as exc:
                self.stats.inc("dead_letters")
                await deadletter.refuse(
                    self.nc,
                    "collector",
                    msg,
                    f"a sample request body must be empty or a JSON object: {exc}",
                    host=self.host,
                )
                return
        try:
            frame = await self._in_thread(self.sampler.frame, seq=0)
            await msg.respond(FRAME.encode(frame))
        except Exception as exc:
            self.stats.inc("errors")
            log.warning("sample request failed: %s", exc)


async def build(config: CollectorConfig, stack: contextlib.AsyncExitStack) -> Collector:
    from libs.runtime import open_nats

    nc = await open_nats(stack, config.nats, f"collector-{config.host.host_id}")
    gpus = await asyncio.to_thread(Gpus, config.nvml_module, config.gpu)
    collector = Collector(config, nc, gpus)
    await open_stats(
        stack,
        nc,
        "collector",
        collector.stats,
        host=collector.host,
        description=f"fleetwatch metrics of host {collector.host}",
    )
    return collector
