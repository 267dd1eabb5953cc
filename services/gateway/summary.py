"""What a live client gets for each frame: the figures a dashboard row shows, not the whole frame."""

from __future__ import annotations

from libs.schemas import MetricFrame


def frame_summary(f: MetricFrame) -> dict:
    # Plain loops: a generator for max() and a list for the GPUs were half of what this cost.
    disk_max = None
    for d in f.disks:
        if disk_max is None or d.percent > disk_max:
            disk_max = d.percent
    gpu_sum = 0.0
    gpu_n = 0
    for g in f.gpus:
        if g.util_percent is not None:
            gpu_sum += g.util_percent
            gpu_n += 1
    cpu, mem = f.cpu, f.mem
    return {
        "host": f.host,
        "ts": f.ts,
        "seq": f.seq,
        "cpu_percent": cpu.percent,
        "load1": cpu.load1,
        "mem_percent": mem.percent,
        "mem_used": mem.used,
        "mem_total": mem.total,
        "swap_percent": f.swap.percent,
        "disk_max_percent": disk_max,
        "net_bytes_recv": f.net.bytes_recv,
        "net_bytes_sent": f.net.bytes_sent,
        "gpu_util_percent": (gpu_sum / gpu_n) if gpu_n else None,
        "procs_total": f.procs.total,
        "uptime": f.uptime,
    }
