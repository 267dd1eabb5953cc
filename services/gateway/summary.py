"""What a live client gets for each frame: the figures a dashboard row shows, not the whole frame."""

from __future__ import annotations

from libs.schemas import MetricFrame


def frame_summary(f: MetricFrame) -> dict:
    disk_max = max((d.percent for d in f.disks), default=None)
    gpu = [g.util_percent for g in f.gpus if g.util_percent is not None]
    return {
        "host": f.host,
        "ts": f.ts,
        "seq": f.seq,
        "cpu_percent": f.cpu.percent,
        "load1": f.cpu.load1,
        "mem_percent": f.mem.percent,
        "mem_used": f.mem.used,
        "mem_total": f.mem.total,
        "swap_percent": f.swap.percent,
        "disk_max_percent": disk_max,
        "net_bytes_recv": f.net.bytes_recv,
        "net_bytes_sent": f.net.bytes_sent,
        "gpu_util_percent": (sum(gpu) / len(gpu)) if gpu else None,
        "procs_total": f.procs.total,
        "uptime": f.uptime,
    }
