"""The gateway's own request counters, and the Prometheus text exposition of them and the fleet."""

from __future__ import annotations

import time

# Upper bounds (seconds) of the request duration histogram.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class RequestStats:
    def __init__(self) -> None:
        self.count: dict[tuple[str, str, int], int] = {}
        self.hist: dict[str, list[int]] = {}
        self.sum: dict[str, float] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        k = (method, route, status)
        self.count[k] = self.count.get(k, 0) + 1
        h = self.hist.get(route)
        if h is None:
            h = self.hist[route] = [0] * (len(BUCKETS) + 1)
            self.sum[route] = 0.0
        for i, b in enumerate(BUCKETS):
            if seconds <= b:
                h[i] += 1
                break
        else:
            h[-1] += 1
        self.sum[route] += seconds


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float | int | None) -> str:
    return "NaN" if v is None else repr(float(v)) if isinstance(v, float) else str(v)


FLEET_GAUGES = (
    ("fleetwatch_host_up", "1 when the host's last frame is recent enough", None),
    ("fleetwatch_host_cpu_percent", "CPU use in percent", "cpu_percent"),
    ("fleetwatch_host_load1", "1-minute load average", "load1"),
    ("fleetwatch_host_mem_percent", "memory use in percent", "mem_percent"),
    ("fleetwatch_host_mem_used_bytes", "memory in use", "mem_used"),
    ("fleetwatch_host_mem_total_bytes", "memory installed", "mem_total"),
    ("fleetwatch_host_swap_percent", "swap use in percent", "swap_percent"),
    ("fleetwatch_host_disk_max_percent", "fullest filesystem, percent used", "disk_max_percent"),
    ("fleetwatch_host_net_recv_bytes_per_second", "network receive rate", "net_bytes_recv"),
    ("fleetwatch_host_net_sent_bytes_per_second", "network send rate", "net_bytes_sent"),
    ("fleetwatch_host_gpu_util_percent", "mean GPU utilisation", "gpu_util_percent"),
    ("fleetwatch_host_procs", "processes", "procs_total"),
    ("fleetwatch_host_last_seen_age_seconds", "seconds since the last frame", None),
)


def exposition(gw) -> str:
    now = time.time()
    views = [gw.directory.view(h, now) for h in sorted(gw.directory.hosts)]
    out: list[str] = []
    for name, help_, field in FLEET_GAUGES:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} gauge")
        for v in views:
            if name == "fleetwatch_host_up":
                val: float | int | None = 1 if v.status == "online" else 0
            elif name == "fleetwatch_host_last_seen_age_seconds":
                val = None if v.last_seen is None else round(max(0.0, now - v.last_seen), 3)
            else:
                if v.last is None or v.last.get(field) is None:
                    continue
                val = v.last[field]
            out.append(f'{name}{{host="{_esc(v.host)}"}} {_num(val)}')
    out.append("# HELP fleetwatch_host_disk_used_percent filesystem use in percent")
    out.append("# TYPE fleetwatch_host_disk_used_percent gauge")
    for host in sorted(gw.directory.hosts):
        for mount, percent in gw.directory.hosts[host].disks:
            out.append(f'fleetwatch_host_disk_used_percent{{host="{_esc(host)}",mount="{_esc(mount)}"}} {_num(percent)}')
    s = gw.stats
    hub = gw.hub
    counters = (
        ("fleetwatch_gateway_stream_events_total", "events fanned out to live clients", hub.published),
        ("fleetwatch_gateway_stream_dropped_total", "live clients dropped for not keeping up", hub.dropped),
        ("fleetwatch_gateway_stream_rejected_total", "live connections refused at the cap", hub.rejected),
        ("fleetwatch_gateway_decode_errors_total", "NATS messages that did not decode", hub.decode_errors),
        ("fleetwatch_gateway_logins_total", "successful logins", gw.logins_ok),
        ("fleetwatch_gateway_login_failures_total", "refused logins", gw.logins_failed),
        ("fleetwatch_gateway_login_rate_limited_total", "logins refused by the rate limit", gw.logins_limited),
    )
    for name, help_, val in counters:
        out += [f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name} {val}"]
    out += [
        "# HELP fleetwatch_gateway_stream_clients live SSE and WebSocket clients",
        "# TYPE fleetwatch_gateway_stream_clients gauge",
        f"fleetwatch_gateway_stream_clients {len(hub.clients)}",
        "# HELP fleetwatch_gateway_hosts hosts known",
        "# TYPE fleetwatch_gateway_hosts gauge",
        f"fleetwatch_gateway_hosts {len(views)}",
        "# HELP fleetwatch_gateway_requests_total HTTP requests answered",
        "# TYPE fleetwatch_gateway_requests_total counter",
    ]
    for (method, route, status), n in sorted(s.count.items()):
        out.append(f'fleetwatch_gateway_requests_total{{method="{method}",route="{_esc(route)}",status="{status}"}} {n}')
    out += ["# HELP fleetwatch_gateway_request_duration_seconds time to answer", "# TYPE fleetwatch_gateway_request_duration_seconds histogram"]
    for route, h in sorted(s.hist.items()):
        acc = 0
        r = _esc(route)
        for b, n in zip(BUCKETS, h):
            acc += n
            out.append(f'fleetwatch_gateway_request_duration_seconds_bucket{{route="{r}",le="{b}"}} {acc}')
        acc += h[-1]
        out.append(f'fleetwatch_gateway_request_duration_seconds_bucket{{route="{r}",le="+Inf"}} {acc}')
        out.append(f'fleetwatch_gateway_request_duration_seconds_sum{{route="{r}"}} {s.sum[route]:.6f}')
        out.append(f'fleetwatch_gateway_request_duration_seconds_count{{route="{r}"}} {acc}')
    return "\n".join(out) + "\n"
