"""The gateway's own request counters, and the Prometheus text exposition of them and the fleet."""

from __future__ import annotations

import time
from bisect import bisect_left

# Upper bounds (seconds) of the request duration histogram: fine around the 30 ms /hosts goal,
# so a p99 read from the buckets says which side of it the gateway is.
BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    """Counts per bucket (the last one: above every bound) and the sum: one list index and two
    additions per observation."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect_left(self.bounds, v)] += 1  # the first bound >= v: Prometheus' `le`
        self.sum += v

    @property
    def count(self) -> int:
        return sum(self.counts)

    def lines(self, name: str, labels: str = "") -> list[str]:
        """`name_bucket`, `name_sum`, `name_count` lines; `labels`: 'k="v",...' or empty."""
        sep = "," if labels else ""
        out = []
        acc = 0
        # `counts` has one entry more than `bounds` (above every bound): it goes into +Inf below.
        for b, n in zip(self.bounds, self.counts, strict=False):
            acc += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{b}"}} {acc}')
        acc += self.counts[-1]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {acc}')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {self.sum:.6f}")
        out.append(f"{name}_count{braces} {acc}")
        return out


class RequestStats:
    """One duration histogram per (method, route template, status); its count is the request
    counter too. The route is the template (`/api/v1/hosts/{host}`), never the raw path, so the
    series stay as few as the routes whatever clients ask for."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str, int], Histogram] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        k = (method, route, status)
        h = self.series.get(k)
        if h is None:
            h = self.series[k] = Histogram(BUCKETS)
        h.observe(seconds)


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
            out.append(
                f'fleetwatch_host_disk_used_percent{{host="{_esc(host)}",mount="{_esc(mount)}"}} {_num(percent)}'
            )
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
    series = sorted(s.series.items())
    for (method, route, status), h in series:
        out.append(
            f'fleetwatch_gateway_requests_total{{method="{method}",route="{_esc(route)}",status="{status}"}} {h.count}'
        )
    out += [
        "# HELP fleetwatch_http_request_duration_seconds time from a request reaching the app to its answer handed to the connection",
        "# TYPE fleetwatch_http_request_duration_seconds histogram",
    ]
    for (method, route, status), h in series:
        out += h.lines(
            "fleetwatch_http_request_duration_seconds", f'method="{method}",route="{_esc(route)}",status="{status}"'
        )
    out += gw.loop_lag.exposition()
    return "\n".join(out) + "\n"
