"""fleetwatch's history as Prometheus series: which `fleetwatch_*` name reads which column of
which table, with which labels, and the series' samples over a window.

Host-level series come from `metrics` and its rollups (`metrics_1m`, `metrics_1h`; the tier is
chosen by step, as the REST history does); per-mount and per-GPU series exist at raw resolution
only. Every series carries `host` and the host's labels (from the `hosts` table)."""

from __future__ import annotations

from dataclasses import dataclass

from ..controllers.common import utc
from ..controllers.history import pick_tier
from .promql import LABEL_NAME, BadData, Matcher, Selector

RAW, ONE_MIN, ONE_HOUR = "metrics", "metrics_1m", "metrics_1h"


@dataclass(frozen=True)
class Metric:
    name: str
    column: str  # the same column name in every tier that stores it
    help: str
    unit: str = ""
    kind: str = "gauge"  # gauge | counter
    table: str = ""  # a raw-only table (metrics_disk, metrics_gpu); '' = metrics and rollups
    label: str = ""  # the per-row label it adds: mount | gpu
    label_column: str = ""
    node_exporter: str = ""  # the closest node_exporter expression, for docs/prometheus.md


def _host(name, column, help, unit="", node="", kind="gauge", raw_only=False) -> Metric:
    return Metric(name, column, help, unit, kind, RAW if raw_only else "", node_exporter=node)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        _host("fleetwatch_cpu_percent", "cpu_percent", "CPU busy, percent of all cores", "percent",
              '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[1m])))'),
        _host("fleetwatch_memory_used_percent", "mem_percent", "Memory in use, percent", "percent",
              "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)"),
        _host("fleetwatch_memory_used_bytes", "mem_used", "Memory in use", "bytes",
              "node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes"),
        _host("fleetwatch_swap_used_percent", "swap_percent", "Swap in use, percent", "percent",
              "100 * (1 - node_memory_SwapFree_bytes / node_memory_SwapTotal_bytes)"),
        _host("fleetwatch_load1", "load1", "1-minute load average", "", "node_load1"),
        _host("fleetwatch_load5", "load5", "5-minute load average", "", "node_load5"),
        _host("fleetwatch_load15", "load15", "15-minute load average", "", "node_load15"),
        _host("fleetwatch_disk_max_used_percent", "disk_max_percent", "Fullest mount, percent used", "percent",
              "max by (instance) (100 * (1 - node_filesystem_avail_bytes / node_filesystem_size_bytes))"),
        _host("fleetwatch_disk_read_bytes_per_second", "disk_read_bps", "Disk reads, all devices", "bytes",
              "sum by (instance) (rate(node_disk_read_bytes_total[1m]))"),
        _host("fleetwatch_disk_written_bytes_per_second", "disk_write_bps", "Disk writes, all devices", "bytes",
              "sum by (instance) (rate(node_disk_written_bytes_total[1m]))"),
        _host("fleetwatch_network_transmit_bytes_per_second", "net_bytes_sent", "Bytes sent, all interfaces",
              "bytes", "sum by (instance) (rate(node_network_transmit_bytes_total[1m]))"),
        _host("fleetwatch_network_receive_bytes_per_second", "net_bytes_recv", "Bytes received, all interfaces",
              "bytes", "sum by (instance) (rate(node_network_receive_bytes_total[1m]))"),
        _host("fleetwatch_gpu_util_percent", "gpu_util_percent", "GPU utilisation, mean of the host's GPUs",
              "percent"),
        _host("fleetwatch_gpu_memory_used_bytes", "gpu_mem_used", "GPU memory in use, all GPUs", "bytes"),
        _host("fleetwatch_processes", "procs_total", "Processes", "", "node_procs_running + node_procs_blocked"),
        _host("fleetwatch_uptime_seconds_total", "uptime", "Seconds since boot (a counter; raw tier only)",
              "seconds", "time() - node_boot_time_seconds", kind="counter", raw_only=True),
        Metric("fleetwatch_filesystem_used_percent", "percent", "Mount used, percent (raw tier only)", "percent",
               table="metrics_disk", label="mount", label_column="mount",
               node_exporter="100 * (1 - node_filesystem_avail_bytes / node_filesystem_size_bytes)"),
        Metric("fleetwatch_filesystem_used_bytes", "used", "Mount used (raw tier only)", "bytes",
               table="metrics_disk", label="mount", label_column="mount",
               node_exporter="node_filesystem_size_bytes - node_filesystem_free_bytes"),
        Metric("fleetwatch_gpu_device_util_percent", "util_percent", "One GPU's utilisation (raw tier only)",
               "percent", table="metrics_gpu", label="gpu", label_column="gpu_index::text"),
        Metric("fleetwatch_gpu_device_temperature_celsius", "temperature", "One GPU's temperature (raw tier only)",
               "celsius", table="metrics_gpu", label="gpu", label_column="gpu_index::text"),
    )
}  # fmt: skip
RESERVED = frozenset({"__name__", "host", "mount", "gpu", "iface", "app", "job", "instance"})


def host_labels(raw: dict) -> dict[str, str]:
    """A host's labels as Prometheus labels: valid names only, never shadowing ours."""
    return {
        k: str(v) for k, v in (raw or {}).items() if isinstance(k, str) and LABEL_NAME.match(k) and k not in RESERVED
    }


@dataclass
class Window:
    """What one selector reads: samples in [start, end] of one tier."""

    start: float
    end: float
    step: float | None  # None for an instant query


def tier(w: Window) -> tuple[str, float]:
    return pick_tier(max(w.end - w.start, 1.0), w.step)


def metrics_for(sel: Selector) -> list[Metric]:
    names = [m for m in sel.matchers if m.name == "__name__"]
    return [m for m in METRICS.values() if all(x.matches(m.name) for x in names)]


def label_matchers(sel: Selector) -> list[Matcher]:
    return [m for m in sel.matchers if m.name != "__name__"]


Series = tuple[dict[str, str], list[float], list[float]]  # labels, times (s), values


async def fetch(
    pool, hosts: dict[str, dict[str, str]], sel: Selector, w: Window, *, samples: bool = True
) -> tuple[list[Series], float]:
    """Every series the selector matches with its samples in the window (none read when not
    `samples`: the series and labels routes); the tier's resolution."""
    out: list[Series] = []
    table, res = tier(w)
    lm = label_matchers(sel)
    # `host` matchers pick the hosts before any sample is read; every other label (a host's,
    # a series' own) is matched per series below.
    host_m = [m for m in lm if m.name == "host"]
    wanted = sorted(h for h in hosts if all(m.matches(h) for m in host_m))
    if not wanted:
        return out, res
    for metric in metrics_for(sel):
        if metric.table and table != RAW:
            raise BadData(
                f"{metric.name} is stored at raw resolution only: use a step under 60 s and a range under 6 h"
            )
        src = metric.table or table
        lab = metric.label_column or "''"
        cols = "extract(epoch FROM time)::float8 AS t, " + f"{metric.column}::float8 AS v" if samples else "NULL"
        rows = await pool.fetch(
            f"""SELECT {"" if samples else "DISTINCT"} host, {lab} AS l, {cols}
                  FROM {src} WHERE host = ANY($1::text[]) AND time >= $2 AND time <= $3
                   AND {metric.column} IS NOT NULL
                 ORDER BY host, l{", t" if samples else ""}""",
            wanted,
            utc(w.start),
            utc(w.end),
        )
        key: tuple[str, str] | None = None
        cur: Series | None = None
        for r in rows:
            if (r["host"], r["l"]) != key:
                key = (r["host"], r["l"])
                labels = {"__name__": metric.name, "host": r["host"], **hosts[r["host"]]}
                if metric.label:
                    labels[metric.label] = r["l"]
                if not all(m.matches(labels.get(m.name, "")) for m in lm):
                    cur = None
                    continue
                cur = (labels, [], [])
                out.append(cur)
            if cur is not None and samples:
                cur[1].append(r["t"])
                cur[2].append(r["v"])
    out += await fetch_remote(pool, hosts, sel, w, wanted, samples)
    return out, res


async def fetch_remote(pool, hosts, sel: Selector, w: Window, wanted: list[str], samples: bool) -> list[Series]:
    """Series the remote-write receiver stored (prom_series / prom_samples): raw samples at any step."""
    names = [m for m in sel.matchers if m.name == "__name__"]
    exact = [m.value for m in names if m.op == "="]
    if exact and exact[0] in METRICS:
        return []
    rows = await pool.fetch(
        "SELECT id, host, name, labels::text AS labels FROM prom_series WHERE host = ANY($1::text[])"
        + (" AND name = $2" if exact else ""),
        wanted,
        *exact[:1],
    )
    found: dict[int, Series] = {}
    for r in rows:
        labels = {**hosts.get(r["host"], {}), **_json(r["labels"]), "__name__": r["name"], "host": r["host"]}
        if all(m.matches(labels.get(m.name, "")) for m in sel.matchers):
            found[r["id"]] = (labels, [], [])
    if samples and found:
        for r in await pool.fetch(
            """SELECT series_id, extract(epoch FROM time)::float8 AS t, value FROM prom_samples
                WHERE series_id = ANY($1::bigint[]) AND time >= $2 AND time <= $3 ORDER BY series_id, time""",
            list(found),
            utc(w.start),
            utc(w.end),
        ):
            s = found[r["series_id"]]
            s[1].append(r["t"])
            s[2].append(r["value"])
        return [s for s in found.values() if s[1]]
    return list(found.values())


async def load_hosts(pool) -> dict[str, dict[str, str]]:
    rows = await pool.fetch("SELECT host, labels FROM hosts")
    return {r["host"]: host_labels(_json(r["labels"])) for r in rows}


def _json(v) -> dict:
    if isinstance(v, str):
        import json

        try:
            v = json.loads(v)
        except ValueError:
            return {}
    return v if isinstance(v, dict) else {}
