"""Plain-path rollups, kept by ingest: `metrics_1m` and `metrics_1h`.

A batch's transaction appends its new frames' per-minute partial rollups to `rollup_pending`
(only rows that were actually inserted, so a redelivered frame never counts twice), and
`fold` moves everything pending into the rollup tables in one transaction, merging averages
by sample count (a NULL side, e.g. no GPU, takes the other side). Keeping the upserts out of
the batch transaction halves the database work per frame: the contended rollup rows are
updated once per fold instead of once per batch, and a batch commits sooner.
"""

from __future__ import annotations

import operator

import asyncpg

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


def _weighted(col: str, how: str) -> str:
    """Partial rows (an average and its sample count each) -> one row, in SQL."""
    if how == MAX:
        return f"max({col})"
    return f"sum({col} * samples) / sum(samples) FILTER (WHERE {col} IS NOT NULL)"


def metrics_insert_sql(with_rollups: bool) -> str:
    """Staged frames -> metrics (and their partial rollups -> rollup_pending); returns the
    number of frames actually new."""
    if not with_rollups:
        return "WITH ins AS (INSERT INTO metrics SELECT * FROM _s_metrics ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM ins"
    returning = ", ".join(["time", "host", *RAW_NEEDED])
    cols = ", ".join(ROLLUP)
    aggs = ", ".join(expr for expr, _ in ROLLUP.values())
    return (
        f"WITH ins AS (INSERT INTO metrics SELECT * FROM _s_metrics ON CONFLICT DO NOTHING RETURNING {returning}),\n"
        f"p AS (INSERT INTO rollup_pending (time, host, samples, {cols})\n"
        f"    SELECT date_bin(INTERVAL '1 minute', time, {ORIGIN}), host, count(*), {aggs} FROM ins GROUP BY 1, 2)\n"
        "SELECT count(*) FROM ins"
    )


def _upsert(table: str, source: str, bucket: str) -> str:
    cols = ", ".join(ROLLUP)
    aggs = ", ".join(_weighted(c, how) for c, (_, how) in ROLLUP.items())
    sets = ",\n        ".join(_merge(c, how) for c, (_, how) in ROLLUP.items())
    return (
        f"INSERT INTO {table} AS r (time, host, samples, {cols})\n"
        f"    SELECT {bucket}, host, sum(samples), {aggs} FROM {source} GROUP BY 1, 2 ORDER BY 2, 1\n"
        f"    ON CONFLICT (host, time) DO UPDATE SET samples = r.samples + excluded.samples,\n        {sets}"
    )


# Everything pending leaves the table and lands in both rollups in one statement (one
# transaction): rows committed while it runs stay for the next fold.
HOUR_BUCKET = f"date_bin(INTERVAL '1 hour', time, {ORIGIN})"
FOLD_SQL = (
    "WITH moved AS (DELETE FROM rollup_pending RETURNING *),\n"
    f"m1 AS ({_upsert('metrics_1m', 'moved', 'time')}),\n"
    f"m2 AS ({_upsert('metrics_1h', 'moved', HOUR_BUCKET)})\n"
    "SELECT coalesce(sum(samples), 0) FROM moved"
)
FOLD_LOCK = 0x6677_726F_6C6C_7570  # "fwrollup": one fold at a time over every ingest process


async def fold(conn: asyncpg.Connection) -> int | None:
    """Fold `rollup_pending` into the rollup tables; the number of frames folded, or None when
    another process is folding right now."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", FOLD_LOCK):
            return None
        return int(await conn.fetchval(FOLD_SQL))


# -- the same partial rollups computed in Python, for batches copied straight into `metrics` -
ROLLUP_SOURCES = [(col, expr.split("(")[1].rstrip(")"), how) for col, (expr, how) in ROLLUP.items()]


def aggregate(records: list[tuple], times: list[float], width: int, columns: tuple[str, ...]) -> list[tuple]:
    """Rollup rows (time, host, samples, *ROLLUP columns) of raw metrics records, grouped by
    host and bucket of `width` seconds, with SQL's avg/max semantics (NULLs ignored). The
    bucket origin (2000-01-03 UTC) is a whole number of hours after the epoch, so buckets
    are plain multiples of `width`."""
    from .rows import ts

    pick = operator.itemgetter(*(columns.index(s) for _, s, _ in ROLLUP_SOURCES))
    hows = [how for _, _, how in ROLLUP_SOURCES]
    host_i = columns.index("host")
    groups: dict[tuple[str, int], list] = {}
    for rec, t in zip(records, times, strict=True):
        key = (rec[host_i], int(t // width) * width)
        g = groups.get(key)
        if g is None:  # most often the only row of its group in a batch: kept as picked
            groups[key] = [1, pick(rec), None]
            continue
        if g[2] is None:  # second row: switch to sums and non-null counts
            g[1] = list(g[1])
            g[2] = [0 if v is None else 1 for v in g[1]]
        g[0] += 1
        acc, cnt = g[1], g[2]
        for k, (v, how) in enumerate(zip(pick(rec), hows, strict=True)):
            if v is None:
                continue
            if acc[k] is None:
                acc[k] = v
            elif how == MAX:
                acc[k] = max(acc[k], v)
            else:
                acc[k] += v
            cnt[k] += 1
    starts: dict[int, object] = {}  # bucket -> its timestamp, made once per bucket
    out = []
    for (host, b), (n, acc, cnt) in groups.items():
        if cnt is not None:
            acc = [
                None if a is None else (a if how == MAX else a / c) for a, c, how in zip(acc, cnt, hows, strict=True)
            ]
        start = starts.get(b)
        if start is None:
            start = starts[b] = ts(b)
        out.append((start, host, n, *acc))
    return out


ROLLUP_COLUMNS = ("time", "host", "samples", *ROLLUP)
