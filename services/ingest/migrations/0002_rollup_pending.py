"""Plain path: `rollup_pending`, the rollup rows of committed frames not yet folded into
`metrics_1m`/`metrics_1h`.

A batch's transaction appends its frames' partial rollups here (append-only, no index: cheap
next to the raw COPY), and a periodic fold moves them into the rollup tables in one transaction
(`DELETE ... RETURNING` feeding the upserts), so each committed frame is counted exactly once
and the contended rollup rows are updated once per fold rather than once per batch.
"""

from __future__ import annotations

import asyncpg


async def up(conn: asyncpg.Connection) -> None:
    if await conn.fetchval("SELECT backend FROM history_storage") != "partitions":
        return  # TimescaleDB keeps the rollups as continuous aggregates
    await conn.execute(
        """CREATE TABLE rollup_pending (
            time              timestamptz NOT NULL,  -- start of the minute bucket
            host              text NOT NULL,
            samples           integer NOT NULL,
            cpu_percent       double precision,
            cpu_percent_max   double precision,
            mem_percent       double precision,
            mem_percent_max   double precision,
            mem_used          double precision,
            swap_percent      double precision,
            load1             double precision,
            load5             double precision,
            load15            double precision,
            disk_max_percent  double precision,
            disk_read_bps     double precision,
            disk_write_bps    double precision,
            net_bytes_sent    double precision,
            net_bytes_recv    double precision,
            gpu_util_percent  double precision,
            gpu_mem_used      double precision,
            procs_total       double precision
        )"""
    )
    # Appended to by every batch and emptied by every fold: vacuum it eagerly.
    await conn.execute(
        "ALTER TABLE rollup_pending SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000)"
    )
