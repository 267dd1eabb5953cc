"""Plain-path rollups, kept by ingest in the same transaction as the raw insert.

Only rows that were actually inserted (RETURNING of the raw INSERT ... ON CONFLICT DO NOTHING)
feed the rollups, so a redelivered frame never counts twice. Averages are merged by sample
count; a NULL side (no GPU) takes the other side.
"""

from __future__ import annotations

# rollup column -> (aggregate over raw rows, how two partial aggregates merge)
AVG = "avg"
MAX = "max"
ROLLUP = {
    "cpu_percent": ("avg(cpu_percent)", AVG),
    "cpu_percent_max": ("max(cpu_percent)", MAX),
    "mem_percent": ("avg(mem_percent)", AVG),
    "mem_percent_max": ("max(mem_percent)", MAX),
    "mem_used": ("avg(mem_used)", AVG),
    "swap_percent": ("avg(swap_percent)", AVG),
    "load1": ("avg(load1)", AVG),
    "load5": ("avg(load5)", AVG),
    "load15": ("avg(load15)", AVG),
    "disk_max_percent": ("avg(disk_max_percent)", AVG),
    "disk_read_bps": ("avg(disk_read_bps)", AVG),
    "disk_write_bps": ("avg(disk_write_bps)", AVG),
    "net_bytes_sent": ("avg(net_bytes_sent)", AVG),
    "net_bytes_recv": ("avg(net_bytes_recv)", AVG),
    "gpu_util_percent": ("avg(gpu_util_percent)", AVG),
    "gpu_mem_used": ("avg(gpu_mem_used)", AVG),
    "procs_total": ("avg(procs_total)", AVG),
}
RAW_NEEDED = sorted({expr.split("(")[1].rstrip(")") for expr, _ in ROLLUP.values()})
ORIGIN = "TIMESTAMPTZ '2000-01-03 00:00:00+00'"  # TimescaleDB's time_bucket origin


def _merge(col: str, how: str) -> str:
    if how == MAX:
        return f"{col} = greatest(r.{col}, excluded.{col})"
    return (
        f"{col} = CASE WHEN r.{col} IS NULL THEN excluded.{col} WHEN excluded.{col} IS NULL THEN r.{col} "
        f"ELSE (r.{col} * r.samples + excluded.{col} * excluded.samples) / (r.samples + excluded.samples) END"
    )


def upsert_cte(name: str, table: str, width: str, source: str = "ins") -> str:
    cols = ", ".join(ROLLUP)
    aggs = ", ".join(expr for expr, _ in ROLLUP.values())
    sets = ",\n        ".join(_merge(c, how) for c, (_, how) in ROLLUP.items())
    return (
        f"{name} AS (\n    INSERT INTO {table} AS r (time, host, samples, {cols})\n"
        f"    SELECT date_bin(INTERVAL '{width}', time, {ORIGIN}), host, count(*), {aggs}\n"
        f"    FROM {source} GROUP BY 1, 2 ORDER BY 2, 1\n"
        f"    ON CONFLICT (host, time) DO UPDATE SET samples = r.samples + excluded.samples,\n        {sets}\n    RETURNING 1)"
    )


def metrics_insert_sql(with_rollups: bool) -> str:
    """Staged frames -> metrics (and rollups); returns the number of frames actually new."""
    if not with_rollups:
        return "WITH ins AS (INSERT INTO metrics SELECT * FROM _s_metrics ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM ins"
    returning = ", ".join(["time", "host", *RAW_NEEDED])
    return (
        f"WITH ins AS (INSERT INTO metrics SELECT * FROM _s_metrics ORDER BY host, time ON CONFLICT DO NOTHING RETURNING {returning}),\n"
        f"{upsert_cte('r1', 'metrics_1m', '1 minute')},\n{upsert_cte('r2', 'metrics_1h', '1 hour')}\n"
        "SELECT count(*) FROM ins"
    )


# -- the same rollups computed in Python, for batches copied straight into `metrics` ---------
ROLLUP_SOURCES = [(col, expr.split("(")[1].rstrip(")"), how) for col, (expr, how) in ROLLUP.items()]


def aggregate(records: list[tuple], times: list[float], width: int, columns: tuple[str, ...]) -> list[tuple]:
    """Rollup rows (time, host, samples, *ROLLUP columns) of raw metrics records, grouped by
    host and bucket of `width` seconds, with SQL's avg/max semantics (NULLs ignored). The
    bucket origin (2000-01-03 UTC) is a whole number of hours after the epoch, so buckets
    are plain multiples of `width`."""
    from .rows import ts

    src = [(columns.index(s), how) for _, s, how in ROLLUP_SOURCES]
    host_i = columns.index("host")
    groups: dict[tuple[str, int], list] = {}
    for rec, t in zip(records, times):
        key = (rec[host_i], int(t // width) * width)
        vals = [rec[i] for i, _ in src]
        g = groups.get(key)
        if g is None:
            groups[key] = [1, vals, None]
            continue
        if g[2] is None:  # second row: switch to sums and non-null counts
            g[2] = [0 if v is None else 1 for v in g[1]]
        g[0] += 1
        acc, cnt = g[1], g[2]
        for k, (v, (_, how)) in enumerate(zip(vals, src)):
            if v is None:
                continue
            if acc[k] is None:
                acc[k] = v
            elif how == MAX:
                acc[k] = max(acc[k], v)
            else:
                acc[k] += v
            cnt[k] += 1
    out = []
    for (host, b), (n, acc, cnt) in sorted(groups.items()):
        if cnt is not None:
            acc = [None if a is None else (a if how == MAX else a / c) for a, c, (_, how) in zip(acc, cnt, src)]
        out.append((ts(b), host, n, *acc))
    return out


def upsert_from_stage_sql(table: str) -> str:
    cols = ", ".join(ROLLUP)
    sets = ",\n    ".join(_merge(c, how) for c, (_, how) in ROLLUP.items())
    return (
        f"INSERT INTO {table} AS r (time, host, samples, {cols}) SELECT time, host, samples, {cols} FROM _s_{table} ORDER BY host, time\n"
        f"ON CONFLICT (host, time) DO UPDATE SET samples = r.samples + excluded.samples,\n    {sets}"
    )


ROLLUP_COLUMNS = ("time", "host", "samples", *ROLLUP)
