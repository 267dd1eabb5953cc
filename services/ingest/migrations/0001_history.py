"""The history schema (DESIGN §4). Decides once between TimescaleDB and native partitions.

Both paths create the same tables and column names, so readers never care which was chosen;
the choice is recorded in `history_storage`. The session setting `fleetwatch.storage`
(`auto`, `timescaledb`, `partitions`) lets ingest force one; `auto` uses TimescaleDB when the
extension can be created.
"""

from __future__ import annotations

import asyncpg

# Raw tables: one row per frame, per mount / GPU per frame, per process per snapshot.
RAW_TABLES = """
CREATE TABLE metrics (
    time              timestamptz NOT NULL,
    host              text NOT NULL,
    boot              bigint NOT NULL,
    seq               bigint NOT NULL,
    interval_s        real NOT NULL DEFAULT 5,
    cpu_percent       real NOT NULL,
    cpu_per_core      real[],
    cpu_count         integer NOT NULL,
    cpu_count_physical integer,
    cpu_freq_mhz      real,
    load1             real NOT NULL DEFAULT 0,
    load5             real NOT NULL DEFAULT 0,
    load15            real NOT NULL DEFAULT 0,
    cpu_iowait        real,
    cpu_steal         real,
    mem_total         bigint NOT NULL,
    mem_available     bigint NOT NULL,
    mem_used          bigint NOT NULL,
    mem_percent       real NOT NULL,
    swap_total        bigint NOT NULL DEFAULT 0,
    swap_used         bigint NOT NULL DEFAULT 0,
    swap_free         bigint NOT NULL DEFAULT 0,
    swap_percent      real NOT NULL DEFAULT 0,
    disk_max_percent  real,
    disk_read_bps     double precision NOT NULL DEFAULT 0,
    disk_write_bps    double precision NOT NULL DEFAULT 0,
    disk_read_iops    double precision NOT NULL DEFAULT 0,
    disk_write_iops   double precision NOT NULL DEFAULT 0,
    net_bytes_sent    double precision NOT NULL DEFAULT 0,
    net_bytes_recv    double precision NOT NULL DEFAULT 0,
    net_packets_sent  double precision NOT NULL DEFAULT 0,
    net_packets_recv  double precision NOT NULL DEFAULT 0,
    net_errin         double precision NOT NULL DEFAULT 0,
    net_errout        double precision NOT NULL DEFAULT 0,
    net_dropin        double precision NOT NULL DEFAULT 0,
    net_dropout       double precision NOT NULL DEFAULT 0,
    net_ifaces        jsonb,
    gpu_count         integer NOT NULL DEFAULT 0,
    gpu_util_percent  real,
    gpu_mem_used      bigint,
    gpu_mem_total     bigint,
    procs_total       integer NOT NULL DEFAULT 0,
    procs_running     integer NOT NULL DEFAULT 0,
    procs_sleeping    integer NOT NULL DEFAULT 0,
    procs_idle        integer NOT NULL DEFAULT 0,
    procs_stopped     integer NOT NULL DEFAULT 0,
    procs_zombie      integer NOT NULL DEFAULT 0,
    procs_other       integer NOT NULL DEFAULT 0,
    uptime            double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (host, time, boot, seq)
){partition};
CREATE INDEX metrics_time_idx ON metrics (time DESC);

CREATE TABLE metrics_disk (
    time     timestamptz NOT NULL,
    host     text NOT NULL,
    mount    text NOT NULL,
    device   text NOT NULL DEFAULT '',
    fstype   text NOT NULL DEFAULT '',
    total    bigint NOT NULL,
    used     bigint NOT NULL,
    free     bigint NOT NULL,
    percent  real NOT NULL,
    PRIMARY KEY (host, time, mount)
){partition};
CREATE INDEX metrics_disk_time_idx ON metrics_disk (time DESC);

CREATE TABLE metrics_gpu (
    time              timestamptz NOT NULL,
    host              text NOT NULL,
    gpu_index         integer NOT NULL,
    uuid              text NOT NULL DEFAULT '',
    name              text NOT NULL DEFAULT '',
    util_percent      real,
    mem_util_percent  real,
    mem_used          bigint,
    mem_total         bigint,
    temperature       real,
    power_w           real,
    power_limit_w     real,
    processes         jsonb,
    PRIMARY KEY (host, time, gpu_index)
){partition};
CREATE INDEX metrics_gpu_time_idx ON metrics_gpu (time DESC);

CREATE TABLE proc_samples (
    time         timestamptz NOT NULL,
    host         text NOT NULL,
    pid          integer NOT NULL,
    ppid         integer NOT NULL DEFAULT 0,
    name         text NOT NULL DEFAULT '',
    username     text NOT NULL DEFAULT '',
    cmdline      text NOT NULL DEFAULT '',
    status       text NOT NULL DEFAULT '',
    cpu_percent  real NOT NULL DEFAULT 0,
    rss          bigint NOT NULL DEFAULT 0,
    mem_percent  real NOT NULL DEFAULT 0,
    threads      integer NOT NULL DEFAULT 0,
    create_time  timestamptz,
    gpu_mem      bigint NOT NULL DEFAULT 0,
    procs_total  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (host, time, pid)
){partition};
CREATE INDEX proc_samples_time_idx ON proc_samples (time DESC);
CREATE INDEX proc_samples_pid_idx ON proc_samples (host, pid, time DESC);
"""

# Rollup columns: `time` is the bucket start; the metric columns are averages over the bucket
# (same names as in `metrics`), `*_max` the maxima, `samples` how many frames went in.
ROLLUP_COLUMNS = """
    time              timestamptz NOT NULL,
    host              text NOT NULL,
    samples           integer NOT NULL,
    cpu_percent       real,
    cpu_percent_max   real,
    mem_percent       real,
    mem_percent_max   real,
    mem_used          double precision,
    swap_percent      real,
    load1             real,
    load5             real,
    load15            real,
    disk_max_percent  real,
    disk_read_bps     double precision,
    disk_write_bps    double precision,
    net_bytes_sent    double precision,
    net_bytes_recv    double precision,
    gpu_util_percent  real,
    gpu_mem_used      double precision,
    procs_total       real
"""

# Which aggregate makes each rollup column from raw `metrics` (the continuous aggregates use
# the same list; ingest's plain-path upsert merges them by sample count).
ROLLUP_AGG = {
    "cpu_percent": "avg(cpu_percent)",
    "cpu_percent_max": "max(cpu_percent)",
    "mem_percent": "avg(mem_percent)",
    "mem_percent_max": "max(mem_percent)",
    "mem_used": "avg(mem_used)::float8",  # avg(bigint) is numeric; float8 as on the plain path
    "swap_percent": "avg(swap_percent)",
    "load1": "avg(load1)",
    "load5": "avg(load5)",
    "load15": "avg(load15)",
    "disk_max_percent": "avg(disk_max_percent)",
    "disk_read_bps": "avg(disk_read_bps)",
    "disk_write_bps": "avg(disk_write_bps)",
    "net_bytes_sent": "avg(net_bytes_sent)",
    "net_bytes_recv": "avg(net_bytes_recv)",
    "gpu_util_percent": "avg(gpu_util_percent)",
    "gpu_mem_used": "avg(gpu_mem_used)::float8",
    "procs_total": "avg(procs_total)",
}

# Tables that are not time series at volume: plain tables, retention by DELETE in ingest.
EVENT_TABLES = """
CREATE TABLE hosts (
    host           text PRIMARY KEY,
    hostname       text NOT NULL DEFAULT '',
    os             text NOT NULL DEFAULT '',
    kernel         text NOT NULL DEFAULT '',
    arch           text NOT NULL DEFAULT '',
    cpu_model      text NOT NULL DEFAULT '',
    cpu_count      integer NOT NULL DEFAULT 0,
    mem_total      bigint NOT NULL DEFAULT 0,
    boot_time      timestamptz,
    gpus           jsonb NOT NULL DEFAULT '[]',
    agent_version  text NOT NULL DEFAULT '',
    labels         jsonb NOT NULL DEFAULT '{}',
    info_time      timestamptz,
    first_seen     timestamptz NOT NULL DEFAULT now(),
    last_seen      timestamptz
);
CREATE INDEX hosts_last_seen_idx ON hosts (last_seen DESC);

CREATE TABLE app_events (
    time         timestamptz NOT NULL,
    host         text NOT NULL,
    app          text NOT NULL,
    state        text NOT NULL,
    previous     text,
    backend      text NOT NULL DEFAULT 'process',
    pid          integer,
    restarts     integer NOT NULL DEFAULT 0,
    exit_code    integer,
    cpu_percent  real,
    rss          bigint,
    detail       text NOT NULL DEFAULT '',
    PRIMARY KEY (host, app, time, state)
);
CREATE INDEX app_events_time_idx ON app_events (time DESC);

CREATE TABLE health_results (
    time                  timestamptz NOT NULL,
    check_name            text NOT NULL,
    target                text NOT NULL DEFAULT '',
    ok                    boolean NOT NULL,
    status_code           integer,
    latency_ms            real,
    error                 text NOT NULL DEFAULT '',
    consecutive_failures  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (check_name, time)
);
CREATE INDEX health_results_time_idx ON health_results (time DESC);

CREATE TABLE alert_events (
    time         timestamptz NOT NULL,
    fingerprint  text NOT NULL,
    rule         text NOT NULL,
    host         text NOT NULL,
    state        text NOT NULL,
    since        timestamptz NOT NULL,
    severity     text NOT NULL DEFAULT 'warning',
    labels       jsonb NOT NULL DEFAULT '{}',
    value        double precision,
    threshold    double precision,
    summary      text NOT NULL DEFAULT '',
    PRIMARY KEY (fingerprint, time, state)
);
CREATE INDEX alert_events_time_idx ON alert_events (time DESC);
CREATE INDEX alert_events_host_idx ON alert_events (host, time DESC);

CREATE TABLE audit_log (
    id           text PRIMARY KEY,
    time         timestamptz NOT NULL,
    host         text NOT NULL,
    actor        text NOT NULL,
    action       text NOT NULL,
    target       text NOT NULL DEFAULT '',
    params       jsonb NOT NULL DEFAULT '{}',
    result       text NOT NULL DEFAULT 'ok',
    code         integer NOT NULL DEFAULT 200,
    error        text NOT NULL DEFAULT '',
    duration_ms  real NOT NULL DEFAULT 0,
    source       text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_time_idx ON audit_log (time DESC);
CREATE INDEX audit_log_host_idx ON audit_log (host, time DESC);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, time DESC);

CREATE TABLE replica_status (
    time         timestamptz NOT NULL,
    host         text NOT NULL,
    ok           boolean NOT NULL,
    trigger      text NOT NULL DEFAULT 'schedule',
    added        integer NOT NULL DEFAULT 0,
    updated      integer NOT NULL DEFAULT 0,
    removed      integer NOT NULL DEFAULT 0,
    total        integer NOT NULL DEFAULT 0,
    duration_ms  real NOT NULL DEFAULT 0,
    error        text NOT NULL DEFAULT '',
    PRIMARY KEY (host, time)
);
CREATE INDEX replica_status_time_idx ON replica_status (time DESC);

CREATE TABLE history_storage (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    backend          text NOT NULL CHECK (backend IN ('timescaledb', 'partitions')),
    chosen_at        timestamptz NOT NULL DEFAULT now(),
    raw_retention    interval NOT NULL,
    rollup_1m_retention interval NOT NULL,
    rollup_1h_retention interval NOT NULL
);
"""

# Plain path: partitions are created ahead (and on demand by ingest) under a lock, so two
# ingest processes never race on the same CREATE TABLE.
PARTITION_FUNCTIONS = """
CREATE FUNCTION fleetwatch_ensure_partition(parent regclass, width interval, at timestamptz)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz;
    hi timestamptz;
    pname text;
BEGIN
    IF width = interval '1 month' THEN
        lo := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    ELSE
        lo := date_trunc('day', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    END IF;
    hi := lo + width;
    pname := parent::text || '_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD');
    IF to_regclass(pname) IS NOT NULL THEN
        RETURN pname;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('fleetwatch-partition:' || parent::text));
    IF to_regclass(pname) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)', pname, parent, lo, hi);
    END IF;
    RETURN pname;
END $$;

-- Drops whole partitions that end before `older_than`; returns the names dropped.
CREATE FUNCTION fleetwatch_drop_partitions(parent regclass, older_than timestamptz)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    r record;
    upper_bound timestamptz;
BEGIN
    FOR r IN
        SELECT c.oid::regclass::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent
    LOOP
        upper_bound := substring(r.bound FROM 'TO \\(''([^'']+)''\\)')::timestamptz;
        IF upper_bound IS NOT NULL AND upper_bound <= older_than THEN
            EXECUTE format('DROP TABLE %s', r.name);
            RETURN NEXT r.name;
        END IF;
    END LOOP;
END $$;
"""

# Partition widths of the plain path (retention drops whole partitions).
PARTITIONED = {
    "metrics": "1 day",
    "metrics_disk": "1 day",
    "metrics_gpu": "1 day",
    "proc_samples": "1 day",
    "metrics_1m": "1 day",
    "metrics_1h": "1 month",
}

RAW_RETENTION = "14 days"
R1M_RETENTION = "90 days"
R1H_RETENTION = "2 years"


async def _timescale_available(conn: asyncpg.Connection) -> bool:
    if not await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"):
        return False
    try:
        async with conn.transaction():  # a savepoint: failing leaves the migration usable
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        return True
    except asyncpg.PostgresError:
        # Installed but not in shared_preload_libraries, or no permission.
        return False


async def choose_backend(conn: asyncpg.Connection) -> str:
    wanted = (await conn.fetchval("SELECT current_setting('fleetwatch.storage', true)")) or "auto"
    if wanted not in ("auto", "timescaledb", "partitions"):
        raise ValueError(f"fleetwatch.storage: expected auto, timescaledb or partitions, got {wanted!r}")
    if wanted == "partitions":
        return "partitions"
    available = await _timescale_available(conn)
    if wanted == "timescaledb" and not available:
        raise RuntimeError(
            "storage 'timescaledb' requested but the timescaledb extension cannot be created on this server"
        )
    return "timescaledb" if available else "partitions"


def _rollup_select(bucket: str) -> str:
    cols = ",\n    ".join(f"{expr} AS {name}" for name, expr in ROLLUP_AGG.items())
    return f"SELECT time_bucket(INTERVAL '{bucket}', time) AS time, host, count(*)::integer AS samples,\n    {cols}\nFROM metrics GROUP BY 1, 2"


# Compressed order of each hypertable: time, then the rest of the primary key, so a redelivered
# row's conflict check on a compressed chunk reads only the batches whose min/max can hold it.
COMPRESS_ORDERBY = {
    "metrics": "time DESC, boot, seq",
    "metrics_disk": "time DESC, mount",
    "metrics_gpu": "time DESC, gpu_index",
    "proc_samples": "time DESC, pid",
}


async def _up_timescale(conn: asyncpg.Connection) -> None:
    await conn.execute(RAW_TABLES.replace("{partition}", ""))
    for table, orderby in COMPRESS_ORDERBY.items():
        await conn.execute(
            f"SELECT create_hypertable('{table}', 'time', chunk_time_interval => INTERVAL '1 day', create_default_indexes => false)"
        )
        await conn.execute(
            f"ALTER TABLE {table} SET (timescaledb.compress, timescaledb.compress_segmentby = 'host', timescaledb.compress_orderby = '{orderby}')"
        )
        await conn.execute(f"SELECT add_compression_policy('{table}', INTERVAL '2 days')")
        await conn.execute(f"SELECT add_retention_policy('{table}', INTERVAL '{RAW_RETENTION}')")
    # WITH NO DATA: materialising inside the migration's transaction is not allowed.
    for name, bucket, retention, start in (
        ("metrics_1m", "1 minute", R1M_RETENTION, "3 days"),
        ("metrics_1h", "1 hour", R1H_RETENTION, "7 days"),
    ):
        await conn.execute(
            f"CREATE MATERIALIZED VIEW {name} WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS\n{_rollup_select(bucket)}\nWITH NO DATA"
        )
        await conn.execute(
            f"SELECT add_continuous_aggregate_policy('{name}', start_offset => INTERVAL '{start}', end_offset => INTERVAL '{bucket}', schedule_interval => INTERVAL '{bucket}')"
        )
        await conn.execute(f"SELECT add_retention_policy('{name}', INTERVAL '{retention}')")
        await conn.execute(f"CREATE INDEX {name}_host_time_idx ON {name} (host, time DESC)")


async def _up_partitions(conn: asyncpg.Connection) -> None:
    await conn.execute(RAW_TABLES.replace("{partition}", " PARTITION BY RANGE (time)"))
    for name in ("metrics_1m", "metrics_1h"):
        await conn.execute(
            f"CREATE TABLE {name} ({ROLLUP_COLUMNS}, PRIMARY KEY (host, time)) PARTITION BY RANGE (time)"
        )
        await conn.execute(f"CREATE INDEX {name}_time_idx ON {name} (time DESC)")
    await conn.execute(PARTITION_FUNCTIONS)
    # Yesterday to three days ahead; ingest keeps creating them (and on demand for late data).
    for table, width in PARTITIONED.items():
        await conn.execute(
            "SELECT fleetwatch_ensure_partition($1::regclass, $2::text::interval, d) FROM generate_series(now() - $2::text::interval, now() + interval '3 days', $2::text::interval) d",
            table,
            width,
        )


async def up(conn: asyncpg.Connection) -> None:
    backend = await choose_backend(conn)
    await conn.execute(EVENT_TABLES)
    if backend == "timescaledb":
        await _up_timescale(conn)
    else:
        await _up_partitions(conn)
    await conn.execute(
        "INSERT INTO history_storage (backend, raw_retention, rollup_1m_retention, rollup_1h_retention) VALUES ($1, $2::text::interval, $3::text::interval, $4::text::interval)",
        backend,
        RAW_RETENTION,
        R1M_RETENTION,
        R1H_RETENTION,
    )
