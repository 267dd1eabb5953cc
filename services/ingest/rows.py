"""Decoded messages -> table rows (tuples in the column order given here, for COPY)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from libs.schemas import (
    AlertEvent,
    AppStatus,
    AuditRecord,
    HealthResult,
    HostInfo,
    MetricFrame,
    ProcessSnapshot,
    ReplicationStatus,
)

_json = msgspec.json.Encoder()
UTC = UTC


def ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def jsonb(value) -> str:
    return _json.encode(value).decode()


METRICS_COLUMNS = (
    "time", "host", "boot", "seq", "interval_s",
    "cpu_percent", "cpu_per_core", "cpu_count", "cpu_count_physical", "cpu_freq_mhz", "load1", "load5", "load15", "cpu_iowait", "cpu_steal",
    "mem_total", "mem_available", "mem_used", "mem_percent", "swap_total", "swap_used", "swap_free", "swap_percent",
    "disk_max_percent", "disk_read_bps", "disk_write_bps", "disk_read_iops", "disk_write_iops",
    "net_bytes_sent", "net_bytes_recv", "net_packets_sent", "net_packets_recv", "net_errin", "net_errout", "net_dropin", "net_dropout", "net_ifaces",
    "gpu_count", "gpu_util_percent", "gpu_mem_used", "gpu_mem_total",
    "procs_total", "procs_running", "procs_sleeping", "procs_idle", "procs_stopped", "procs_zombie", "procs_other", "uptime",
)  # fmt: skip


def metrics_row(f: MetricFrame, t: datetime) -> tuple:
    c, m, s, io, n, p = f.cpu, f.mem, f.swap, f.disk_io, f.net, f.procs
    # Called for every frame ingested: the GPU-less and disk-less common cases skip the work.
    gpus = f.gpus
    if gpus:
        utils = [g.util_percent for g in gpus if g.util_percent is not None]
        used = [g.mem_used for g in gpus if g.mem_used is not None]
        totals = [g.mem_total for g in gpus if g.mem_total is not None]
        gpu = (
            len(gpus),
            (sum(utils) / len(utils)) if utils else None,
            sum(used) if used else None,
            sum(totals) if totals else None,
        )
    else:
        gpu = _NO_GPU
    disks = f.disks
    return (
        t, f.host, f.boot, f.seq, f.interval,
        c.percent, c.per_core or None, c.count, c.count_physical, c.freq_mhz, c.load1, c.load5, c.load15, c.iowait, c.steal,
        m.total, m.available, m.used, m.percent, s.total, s.used, s.free, s.percent,
        max([d.percent for d in disks]) if disks else None, io.read_bps, io.write_bps, io.read_iops, io.write_iops,
        n.bytes_sent, n.bytes_recv, n.packets_sent, n.packets_recv, n.errin, n.errout, n.dropin, n.dropout,
        jsonb(f.net_ifaces) if f.net_ifaces else None,
        *gpu,
        p.total, p.running, p.sleeping, p.idle, p.stopped, p.zombie, p.other, f.uptime,
    )  # fmt: skip


_NO_GPU = (0, None, None, None)


DISK_COLUMNS = ("time", "host", "mount", "device", "fstype", "total", "used", "free", "percent")


def disk_rows(f: MetricFrame, t: datetime) -> list[tuple]:
    return [(t, f.host, d.mount, d.device, d.fstype, d.total, d.used, d.free, d.percent) for d in f.disks]


GPU_COLUMNS = (
    "time",
    "host",
    "gpu_index",
    "uuid",
    "name",
    "util_percent",
    "mem_util_percent",
    "mem_used",
    "mem_total",
    "temperature",
    "power_w",
    "power_limit_w",
    "processes",
)


def gpu_rows(f: MetricFrame, t: datetime) -> list[tuple]:
    return [
        (
            t,
            f.host,
            g.index,
            g.uuid,
            g.name,
            g.util_percent,
            g.mem_util_percent,
            g.mem_used,
            g.mem_total,
            g.temperature,
            g.power_w,
            g.power_limit_w,
            jsonb(g.processes) if g.processes else None,
        )
        for g in f.gpus
    ]


PROC_COLUMNS = (
    "time",
    "host",
    "pid",
    "ppid",
    "name",
    "username",
    "cmdline",
    "status",
    "cpu_percent",
    "rss",
    "mem_percent",
    "threads",
    "create_time",
    "gpu_mem",
    "procs_total",
)


def proc_rows(s: ProcessSnapshot, t: datetime) -> list[tuple]:
    seen: set[int] = set()
    out = []
    for p in s.procs:
        if p.pid in seen:
            continue
        seen.add(p.pid)
        out.append(
            (
                t,
                s.host,
                p.pid,
                p.ppid,
                p.name,
                p.user,
                p.cmdline,
                p.status,
                p.cpu_percent,
                p.rss,
                p.mem_percent,
                p.threads,
                ts(p.create_time) if p.create_time else None,
                p.gpu_mem,
                s.total,
            )
        )
    return out


HOST_COLUMNS = (
    "host",
    "hostname",
    "os",
    "kernel",
    "arch",
    "cpu_model",
    "cpu_count",
    "mem_total",
    "boot_time",
    "gpus",
    "agent_version",
    "labels",
    "info_time",
)


def host_row(h: HostInfo) -> tuple:
    return (
        h.host,
        h.hostname,
        h.os,
        h.kernel,
        h.arch,
        h.cpu_model,
        h.cpu_count,
        h.mem_total,
        ts(h.boot_time) if h.boot_time else None,
        jsonb(h.gpus),
        h.agent_version,
        jsonb(h.labels),
        ts(h.ts),
    )


# Event tables: (table, columns, row function) per message type.
def app_row(a: AppStatus) -> tuple:
    return (
        ts(a.ts),
        a.host,
        a.app,
        a.state,
        a.previous,
        a.backend,
        a.pid,
        a.restarts,
        a.exit_code,
        a.cpu_percent,
        a.rss,
        a.detail,
    )


def health_row(h: HealthResult) -> tuple:
    return (ts(h.ts), h.check, h.target, h.ok, h.status_code, h.latency_ms, h.error, h.consecutive_failures)


def alert_row(a: AlertEvent) -> tuple:
    return (
        ts(a.ts),
        a.fingerprint,
        a.rule,
        a.host,
        a.state,
        ts(a.since),
        a.severity,
        jsonb(a.labels),
        a.value,
        a.threshold,
        a.summary,
    )


def audit_row(a: AuditRecord) -> tuple:
    return (
        a.id,
        ts(a.ts),
        a.host,
        a.actor,
        a.action,
        a.target,
        jsonb(a.params),
        a.result,
        a.code,
        a.error,
        a.duration_ms,
        a.source,
    )


def replica_row(r: ReplicationStatus) -> tuple:
    return (ts(r.ts), r.host, r.ok, r.trigger, r.added, r.updated, r.removed, r.total, r.duration_ms, r.error)


EVENT_TABLES = {
    "app_events": (
        "time",
        "host",
        "app",
        "state",
        "previous",
        "backend",
        "pid",
        "restarts",
        "exit_code",
        "cpu_percent",
        "rss",
        "detail",
    ),
    "health_results": (
        "time",
        "check_name",
        "target",
        "ok",
        "status_code",
        "latency_ms",
        "error",
        "consecutive_failures",
    ),
    "alert_events": (
        "time",
        "fingerprint",
        "rule",
        "host",
        "state",
        "since",
        "severity",
        "labels",
        "value",
        "threshold",
        "summary",
    ),
    "audit_log": (
        "id",
        "time",
        "host",
        "actor",
        "action",
        "target",
        "params",
        "result",
        "code",
        "error",
        "duration_ms",
        "source",
    ),
    "replica_status": ("time", "host", "ok", "trigger", "added", "updated", "removed", "total", "duration_ms", "error"),
}
