-- Samples received by the Prometheus remote-write receiver (prometheus/remote.py): a table of
-- their own, keyed by series. `key` is the series' labels in canonical form (sorted, joined),
-- `labels` every label but __name__ and host. Read by the Prometheus query API.
CREATE TABLE IF NOT EXISTS prom_series (
    id          bigserial PRIMARY KEY,
    key         text NOT NULL UNIQUE,
    host        text NOT NULL,
    name        text NOT NULL,
    labels      jsonb NOT NULL DEFAULT '{}',
    first_seen  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS prom_series_name_idx ON prom_series (name, host);

CREATE TABLE IF NOT EXISTS prom_samples (
    series_id  bigint NOT NULL,
    time       timestamptz NOT NULL,
    value      double precision NOT NULL,
    PRIMARY KEY (series_id, time)
);
CREATE INDEX IF NOT EXISTS prom_samples_time_idx ON prom_samples USING brin (time);
