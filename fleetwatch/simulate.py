"""`fleetwatch simulate --hosts N --interval S`: a fleet of fake hosts on NATS.

Publishes realistic MetricFrames, ProcessSnapshots and HostInfo for N hosts, the way real
collectors do (JetStream, `Nats-Msg-Id = <host>:<boot>:<seq>`), so benchmarks, tests and the UI
can show a fleet. Connects as the `simulator` NATS user (FLEETWATCH_NATS_* settings), or with
`--credentials` as each host's own agent where the file has one.

`Simulator` is the reusable part: deterministic per seed, it builds the messages and publishes
them in bulk (many publishes in flight, each acknowledged by the stream).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from libs.schemas import Codec, HostInfo, MetricFrame, ProcessSnapshot, subjects
from libs.schemas.metrics import (
    CpuStats,
    DiskIO,
    DiskUsage,
    GpuInfo,
    GpuProcess,
    GpuStats,
    MemStats,
    NetIface,
    NetRates,
    ProcCounts,
    ProcInfo,
    SwapStats,
)
from libs.schemas.streams import HOSTS_BUCKET

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

    from libs.runtime import NatsSettings

FRAME = Codec(MetricFrame)
SNAPSHOT = Codec(ProcessSnapshot)
HOSTINFO = Codec(HostInfo)
DEFAULT_URL = "nats://127.0.0.1:4222"  # where `fleetwatch simulate` looks without a setting

GiB = 1024**3
PROC_NAMES = (
    "python3",
    "postgres",
    "nginx",
    "node",
    "java",
    "sshd",
    "systemd",
    "containerd",
    "redis-server",
    "gunicorn",
    "celery",
    "chrome",
)
GPU_NAMES = ("NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "NVIDIA L4")


class _Host:
    """One fake host's fixed shape and its slowly wandering load."""

    def __init__(self, host: str, rng: random.Random, gpu_share: float) -> None:
        self.host = host
        self.rng = rng
        self.cores = rng.choice((4, 8, 16, 32, 64))
        self.mem_total = rng.choice((8, 16, 32, 64, 128, 256)) * GiB
        self.cpu = rng.uniform(3, 60)
        self.mem = rng.uniform(15, 80)
        self.disk_total = [rng.choice((50, 100, 500)) * GiB, rng.choice((500, 1000, 4000)) * GiB]
        self.disk_used = [rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.9)]
        self.net = rng.uniform(1e4, 5e7)
        n_gpu = rng.choice((1, 2, 4, 8)) if rng.random() < gpu_share else 0
        self.gpu_name = rng.choice(GPU_NAMES)
        self.gpus = [rng.uniform(0, 100) for _ in range(n_gpu)]
        self.procs = rng.randint(120, 600)
        self.rack = f"r{rng.randrange(8)}"
        # Per-core spread around the host's load, drawn once: a frame takes a window of it at a
        # random offset (drawing a Gaussian per core per frame was most of a frame's cost).
        self.core_noise = [rng.gauss(0, 10) for _ in range(4 * self.cores)]
        self.seq = 0
        self.snap_seq = 0

    def _walk(self, v: float, lo: float, hi: float, step: float) -> float:
        return min(hi, max(lo, v + self.rng.gauss(0, step)))

    def frame(self, boot: int, ts: float, interval: float) -> MetricFrame:
        r = self.rng
        self.seq += 1
        self.cpu = self._walk(self.cpu, 0.5, 99.5, 4)
        self.mem = self._walk(self.mem, 5, 98, 1)
        self.net = self._walk(self.net, 1e3, 1e9, self.net * 0.1)
        self.disk_used = [min(0.99, u + r.uniform(0, 1e-5)) for u in self.disk_used]
        self.gpus = [self._walk(g, 0, 100, 8) for g in self.gpus]
        k = r.randrange(3 * self.cores)
        c = self.cpu
        per_core = [round(min(100.0, max(0.0, c + n)), 1) for n in self.core_noise[k : k + self.cores]]
        used = int(self.mem_total * self.mem / 100)
        disks = [
            DiskUsage(
                mount=m,
                device=d,
                fstype="ext4",
                total=t,
                used=int(t * u),
                free=t - int(t * u),
                percent=round(100 * u, 1),
            )
            for m, d, t, u in zip(
                ("/", "/data"), ("/dev/nvme0n1p2", "/dev/nvme1n1"), self.disk_total, self.disk_used, strict=True
            )
        ]
        recv, sent = self.net, self.net * r.uniform(0.2, 1.2)
        net = NetRates(
            bytes_sent=round(sent, 1),
            bytes_recv=round(recv, 1),
            packets_sent=round(sent / 900, 1),
            packets_recv=round(recv / 1100, 1),
        )
        gpus = [
            GpuStats(
                index=i,
                uuid=f"GPU-{self.host}-{i}",
                name=self.gpu_name,
                util_percent=round(g, 1),
                mem_util_percent=round(g * 0.6, 1),
                mem_used=int(80 * GiB * g / 100),
                mem_total=80 * GiB,
                temperature=round(35 + g * 0.4, 1),
                power_w=round(60 + 3 * g, 1),
                power_limit_w=400.0,
                processes=[GpuProcess(pid=1000 + i, mem_used=int(80 * GiB * g / 100))] if g > 5 else [],
            )
            for i, g in enumerate(self.gpus)
        ]
        running = max(1, int(self.cpu / 100 * self.cores))
        return MetricFrame(
            host=self.host,
            ts=ts,
            boot=boot,
            seq=self.seq,
            interval=interval,
            cpu=CpuStats(
                percent=round(self.cpu, 2),
                per_core=per_core,
                count=self.cores,
                count_physical=self.cores // 2,
                freq_mhz=2400.0,
                load1=round(self.cpu / 100 * self.cores, 2),
                load5=round(self.cpu / 100 * self.cores * 0.9, 2),
                load15=round(self.cpu / 100 * self.cores * 0.8, 2),
                iowait=round(r.uniform(0, 3), 2),
                steal=0.0,
            ),
            mem=MemStats(total=self.mem_total, available=self.mem_total - used, used=used, percent=round(self.mem, 2)),
            swap=SwapStats(total=4 * GiB, used=int(0.05 * 4 * GiB), free=int(0.95 * 4 * GiB), percent=5.0),
            disks=disks,
            disk_io=DiskIO(
                read_bps=round(r.uniform(0, 5e7), 1),
                write_bps=round(r.uniform(0, 5e7), 1),
                read_iops=round(r.uniform(0, 500), 1),
                write_iops=round(r.uniform(0, 500), 1),
            ),
            net=net,
            net_ifaces=[NetIface(name="eth0", **{f: getattr(net, f) for f in net.__struct_fields__})],
            gpus=gpus,
            procs=ProcCounts(total=self.procs, running=running, sleeping=self.procs - running - 2, idle=1, zombie=1),
            uptime=1e6 + ts % 1e6,
        )

    def snapshot(self, boot: int, ts: float, top_n: int) -> ProcessSnapshot:
        r = self.rng
        self.snap_seq += 1
        procs = []
        for i in range(min(top_n, self.procs)):
            name = PROC_NAMES[i % len(PROC_NAMES)]
            rss = int(r.lognormvariate(18, 1.5)) % (self.mem_total // 4)
            procs.append(
                ProcInfo(
                    pid=1000 + i,
                    ppid=1,
                    name=name,
                    user="app" if i % 3 else "root",
                    cmdline=f"/usr/bin/{name} --worker {i}",
                    status="running" if i < 2 else "sleeping",
                    cpu_percent=round(max(0.0, r.gauss(self.cpu / (i + 1), 2)), 2),
                    rss=rss,
                    mem_percent=round(100 * rss / self.mem_total, 3),
                    threads=r.randint(1, 64),
                    create_time=ts - 86400 - i * 60,
                    gpu_mem=int(80 * GiB * self.gpus[0] / 100) if (i == 0 and self.gpus) else 0,
                )
            )
        return ProcessSnapshot(host=self.host, ts=ts, boot=boot, seq=self.snap_seq, total=self.procs, procs=procs)

    def info(self, ts: float) -> HostInfo:
        return HostInfo(
            host=self.host,
            ts=ts,
            hostname=f"{self.host}.sim.example",
            os="Debian GNU/Linux 12 (bookworm)",
            kernel="6.1.0-18-amd64",
            arch="x86_64",
            cpu_model="Simulated EPYC",
            cpu_count=self.cores,
            mem_total=self.mem_total,
            boot_time=ts - 1e6,
            gpus=[
                GpuInfo(index=i, uuid=f"GPU-{self.host}-{i}", name=self.gpu_name, mem_total=80 * GiB, driver="550.54")
                for i in range(len(self.gpus))
            ],
            agent_version="sim",
            labels={"sim": "true", "rack": self.rack},
        )


class _AckedPublisher:
    """JetStream publishes with up to `in_flight` unacknowledged, acks read from one inbox."""

    def __init__(self, nc, items: list[tuple[str, bytes, str]], in_flight: int, timeout: float, retries: int) -> None:
        self.nc = nc
        self.items = items
        self.in_flight = max(1, in_flight)
        self.timeout = timeout
        self.retries = retries
        self.inbox = nc.new_inbox()
        self.todo = list(range(len(items) - 1, -1, -1))  # a stack: popped in order
        self.later: list[tuple[float, int]] = []  # (when, index): backing off after a failure
        self.waiting: dict[str, tuple[int, float]] = {}  # token -> (index, sent at)
        self.attempts = [0] * len(items)
        self.done = 0
        self.error: str = ""
        self.wake = asyncio.Event()
        self.tokens = 0

    async def _on_ack(self, msg) -> None:
        entry = self.waiting.pop(msg.subject[len(self.inbox) + 1 :], None)
        if entry is None:
            return  # the late answer to a publish already sent again
        # A PubAck is {"stream": ..., "seq": ...}; a refusal {"error": ...}, or an empty
        # message with a Status header (503: no stream answered).
        if msg.data and b'"error"' not in msg.data:
            self.done += 1
        else:
            self._retry(entry[0], msg.data.decode(errors="replace") or (msg.headers or {}).get("Status", "?"))
        self.wake.set()

    def _retry(self, i: int, why: str) -> None:
        a = self.attempts[i]
        if a >= self.retries:
            self.error = f"{self.items[i][0]}: not stored after {a} attempts: {why}"
            return
        heapq.heappush(self.later, (time.monotonic() + min(0.1 * 2 ** (a - 1), 2.0), i))

    async def run(self) -> None:
        sub = await self.nc.subscribe(f"{self.inbox}.*", cb=self._on_ack)
        try:
            last_scan = time.monotonic()
            while self.done < len(self.items):
                if self.error:
                    raise RuntimeError(self.error)
                now = time.monotonic()
                while self.later and self.later[0][0] <= now:
                    self.todo.append(heapq.heappop(self.later)[1])
                while self.todo and len(self.waiting) < self.in_flight:
                    i = self.todo.pop()
                    self.attempts[i] += 1
                    self.tokens += 1
                    token = str(self.tokens)
                    self.waiting[token] = (i, now)
                    subject, data, mid = self.items[i]
                    try:
                        await self.nc.publish(
                            subject, data, reply=f"{self.inbox}.{token}", headers={"Nats-Msg-Id": mid}
                        )
                    except Exception as exc:  # e.g. the reconnect buffer is full: back off
                        del self.waiting[token]
                        self._retry(i, repr(exc))
                        break
                if now - last_scan >= 0.5:  # unanswered for too long: send again
                    last_scan = now
                    for token, (i, sent) in list(self.waiting.items()):
                        if now - sent > self.timeout:
                            del self.waiting[token]
                            self._retry(i, "no ack")
                self.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 0.1 if self.later else 0.5)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def host_ids(n: int, prefix: str = "sim") -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(n)]


class Simulator:
    """N fake hosts. Build messages with `frame/snapshot/info`, publish with `publish_*`."""

    def __init__(
        self,
        hosts: int | Iterable[str],
        *,
        interval: float = 5.0,
        seed: int = 1,
        top_n: int = 25,
        gpu_share: float = 0.25,
        boot: int | None = None,
    ) -> None:
        ids = host_ids(hosts) if isinstance(hosts, int) else [subjects.check_host_id(h) for h in hosts]
        self.interval = interval
        self.top_n = top_n
        self.boot = boot if boot is not None else int(time.time() * 1000)
        self.hosts = {h: _Host(h, random.Random(f"{seed}:{h}"), gpu_share) for h in ids}
        self.published = 0
        self.round_ts: float | None = None

    @property
    def host_ids(self) -> list[str]:
        return list(self.hosts)

    def frame(self, host: str, ts: float | None = None) -> MetricFrame:
        return self.hosts[host].frame(self.boot, time.time() if ts is None else ts, self.interval)

    def snapshot(self, host: str, ts: float | None = None) -> ProcessSnapshot:
        return self.hosts[host].snapshot(self.boot, time.time() if ts is None else ts, self.top_n)

    def info(self, host: str, ts: float | None = None) -> HostInfo:
        return self.hosts[host].info(time.time() if ts is None else ts)

    def history(self, rounds: int, end: float | None = None) -> list[MetricFrame]:
        """`rounds` frames of every host, one interval apart, the last round at `end` (now):
        a burst of history whose timestamps are all valid (in the past, within retention)."""
        end = time.time() if end is None else end
        out = []
        for r in range(rounds):
            ts = end - (rounds - 1 - r) * self.interval
            for i, h in enumerate(self.hosts):
                out.append(self.frame(h, ts + (i % 1000) * 1e-4))
        return out

    # -- publishing --------------------------------------------------------------------
    @staticmethod
    def encoded(msg) -> tuple[str, bytes, str]:
        if isinstance(msg, MetricFrame):
            return subjects.metrics(msg.host), FRAME.encode(msg), msg.msg_id
        if isinstance(msg, ProcessSnapshot):
            return subjects.procs(msg.host), SNAPSHOT.encode(msg), msg.msg_id
        return subjects.hosts(msg.host), HOSTINFO.encode(msg), f"{msg.host}:info:{msg.ts}"

    async def publish(
        self, nc, messages: Iterable, *, in_flight: int = 256, timeout: float = 10.0, retries: int = 20
    ) -> int:
        """Publish with JetStream acks, up to `in_flight` at a time; retried until stored (the
        msg id makes a retry harmless). Returns how many were stored."""
        return await self.publish_encoded(
            nc, [self.encoded(m) for m in messages], in_flight=in_flight, timeout=timeout, retries=retries
        )

    async def publish_encoded(
        self, nc, items: list[tuple[str, bytes, str]], *, in_flight: int = 256, timeout: float = 10.0, retries: int = 20
    ) -> int:
        """`publish` for messages already encoded by `encoded`. The stream's acks come back to
        one inbox subscription (no request, future and timer per message, which cost more than
        building the message); a refused or unanswered publish is sent again after a backoff."""
        if not items:
            return 0
        await _AckedPublisher(nc, items, in_flight, timeout, retries).run()
        self.published += len(items)
        return len(items)

    async def publish_infos(self, nc) -> None:
        """HostInfo of every host to the stream and to the `fleet_hosts` bucket."""
        infos = [self.info(h) for h in self.hosts]
        await self.publish(nc, infos)
        js = nc.jetstream()
        for i in infos:
            await js.publish(f"$KV.{HOSTS_BUCKET.bucket}.{i.host}", HOSTINFO.encode(i), timeout=10)

    async def run(
        self,
        connections: dict[str, object],
        *,
        rounds: int | None = None,
        snapshot_every: int = 3,
        on_round=None,
        on_start=None,
    ) -> None:
        """Live mode: every interval, one frame per host, all stamped with the round's time;
        snapshots every `snapshot_every` rounds. `connections` maps host -> NATS connection.
        A round is built and encoded while the previous one's interval runs out, so its
        publishing starts on time (building 10,000 frames takes a second or more).
        `on_start(ts)` is called as a round starts going out, `on_round(r, n)` once it is
        acknowledged; `round_ts` is the time its messages carry."""
        r = 0
        next_t = time.monotonic()
        hosts = list(self.hosts)
        while rounds is None or r < rounds:
            ts = time.time() + max(0.0, next_t - time.monotonic())  # the wall time it goes out
            msgs: list = [self.frame(h, ts) for h in hosts]
            if r % snapshot_every == 0:
                msgs += [self.snapshot(h, ts) for h in hosts]
            by_conn: dict[int, tuple[object, list]] = {}
            for m in msgs:
                c = connections[m.host]
                by_conn.setdefault(id(c), (c, []))[1].append(self.encoded(m))
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            self.round_ts = ts
            if on_start:
                on_start(ts)
            # Every host has its frame in flight at once, as N independent collectors would.
            await asyncio.gather(
                *(self.publish_encoded(c, items, in_flight=len(items)) for c, items in by_conn.values())
            )
            r += 1
            if on_round:
                on_round(r, len(msgs))
            next_t += self.interval


class _Unreachable(Exception):
    """Why the simulator cannot go on: one line on stderr, exit status 1."""


def _fail(message: str, code: int = 1) -> int:
    print(f"fleetwatch: error: {message}", file=sys.stderr)
    return code


async def _probe(url: str) -> str:
    """The operating system's reason a TCP connection to a NATS URL fails ("connection refused"):
    nats-py only says that no server was available."""
    from urllib.parse import urlsplit

    from .cli.reach import os_reason

    parts = urlsplit(url if "://" in url else f"nats://{url}")
    try:
        async with asyncio.timeout(3):
            _, writer = await asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 4222)
    except (OSError, TimeoutError) as exc:
        return os_reason(exc)
    writer.close()
    return "no NATS server answered"


async def _connect(settings: NatsSettings, name: str) -> NatsClient:
    """`connect` once, its failure turned into a sentence: nothing retried, no traceback."""
    import logging

    import nats

    from libs.runtime import connect
    from libs.runtime.natsconn import TlsVerifyError

    from .cli.reach import unreachable

    # The runtime logs every failed attempt; the one line below says it all.
    log = logging.getLogger("fleetwatch.nats")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        return await connect(settings, name, retry_forever=False)
    except TlsVerifyError as exc:
        raise _Unreachable(str(exc)) from None
    except nats.errors.AuthorizationError:
        raise _Unreachable(
            f"NATS at {settings.url} refused the login of {settings.user or 'an anonymous user'}: set "
            "FLEETWATCH_NATS_USER and FLEETWATCH_NATS_PASSWORD (for `make run`'s NATS: "
            "`set -a; . .fleetwatch/nats/env/simulator.env; set +a`)"
        ) from None
    except (TimeoutError, OSError, nats.errors.Error):
        servers = settings.servers or [settings.url]
        raise _Unreachable(
            unreachable("NATS", settings.url, await _probe(servers[0]), "--url or FLEETWATCH_NATS_URL")
        ) from None
    finally:
        log.setLevel(level)


async def _main(args: argparse.Namespace, creds: dict[str, str]) -> int:
    from libs.embedded import natsconfig
    from libs.runtime import NatsSettings, load_settings
    from libs.runtime.settings import SettingsError

    # Services must be told where NATS is; this demo tool has its own default (a local server),
    # and --url overrides both.
    env = {"FLEETWATCH_NATS_URL": DEFAULT_URL, **os.environ}
    if args.url:
        env["FLEETWATCH_NATS_URL"] = args.url
    try:
        base = load_settings(NatsSettings, "FLEETWATCH_NATS_", env)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not base.user and not args.credentials:
        base = NatsSettings(**{**{f: getattr(base, f) for f in base.__struct_fields__}, "user": "simulator"})
    try:
        hosts = [h.strip() for h in args.host_ids.split(",") if h.strip()] if args.host_ids else args.hosts
        sim = Simulator(hosts, interval=args.interval, seed=args.seed, top_n=args.top)
    except ValueError as exc:  # an id that is not a subject token
        print(f"error: {exc}", file=sys.stderr)
        return 2
    conns: dict[str, object] = {}
    opened: list[NatsClient] = []
    try:
        shared = await _connect(base, "simulator")
        opened.append(shared)
        conns = dict.fromkeys(sim.host_ids, shared)
        for h in sim.host_ids:
            user = natsconfig.agent_user(h)
            if user in creds:
                c = await _connect(
                    NatsSettings(
                        **{
                            **{f: getattr(base, f) for f in base.__struct_fields__},
                            "user": user,
                            "password": creds[user],
                            "inbox_prefix": subjects.inbox_prefix(h),
                        }
                    ),
                    f"sim-{h}",
                )
                conns[h] = c
                opened.append(c)
        await sim.publish_infos(shared)
        started = time.monotonic()

        def report(r: int, n: int) -> None:
            print(f"round {r}: {n} messages, {sim.published} total, {time.monotonic() - started:.0f}s", flush=True)

        await sim.run(conns, rounds=args.rounds, on_round=report)
    except _Unreachable as exc:
        return _fail(str(exc))
    except (RuntimeError, TimeoutError) as exc:
        # NATS went away mid-run for longer than the publishes' retries (or a stream refused them).
        return _fail(f"publishing to NATS at {base.url} failed: {exc or type(exc).__name__}")
    finally:
        for c in opened:
            with contextlib.suppress(Exception):
                await c.close()
    return 0


def _cmd(args: argparse.Namespace) -> int:
    if args.hosts < 1 or args.interval <= 0 or not math.isfinite(args.interval):
        print("error: --hosts must be >= 1 and --interval > 0", file=sys.stderr)
        return 2
    creds: dict[str, str] = {}
    if args.credentials:
        try:
            with open(args.credentials) as f:
                creds = json.load(f)
        except (OSError, ValueError) as exc:
            return _fail(f"cannot read the credentials file {args.credentials}: {exc}", 2)
    return asyncio.run(_main(args, creds))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="publish realistic metrics for N fake hosts (benchmarks, demos)")
    p.add_argument("--hosts", type=int, default=10, help="number of fake hosts (default 10)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between frames of a host (default 5)")
    p.add_argument(
        "--rounds", type=int, default=None, help="stop after this many intervals (default: run until Ctrl-C)"
    )
    p.add_argument("--top", type=int, default=25, help="processes per snapshot (default 25)")
    p.add_argument("--host-ids", default="", help="comma-separated host ids to simulate instead of sim-00000...")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--url", default="", help=f"NATS URL (default: FLEETWATCH_NATS_URL, else {DEFAULT_URL})")
    p.add_argument(
        "--credentials",
        default="",
        help="credentials.json of `fleetwatch nats-config`: publish as each host's agent where it has one",
    )
    p.set_defaults(func=_cmd)
