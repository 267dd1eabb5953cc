"""The remote-write receiver: `POST /prometheus/api/v1/write` (remote-write 1.0, snappy + protobuf).

Each series names its host with a `host` label (Prometheus's `external_labels` or relabelling);
an API token may write only the hosts its entry in `remote_write_allow` names (token id ->
`|`-separated glob patterns), a session token none. Samples land in prom_samples keyed by series
(prom_series); the host joins the fleet view labelled external=prometheus. Every refusal is a
4xx with its reason, counted by reason."""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
import time
from collections import Counter

import asyncpg
from litestar.exceptions import ClientException, PermissionDeniedException

from libs.schemas import HostInfo

from ..authn import Actor
from ..controllers.common import HOST_PATTERN
from .promql import LABEL_NAME
from .wire import WireError, snappy_decode, write_request

MAX_BODY = 8 * 1024 * 1024  # compressed
MAX_DECODED = 64 * 1024 * 1024
MAX_SERIES = 50_000
MAX_SAMPLES = 500_000
EXTERNAL = {"external": "prometheus"}


class RemoteWriteStats:
    def __init__(self) -> None:
        self.requests = 0
        self.samples = 0
        self.rejected: Counter[str] = Counter()


def _refuse(stats: RemoteWriteStats, reason: str, detail: str, status: int = 400):
    stats.rejected[reason] += 1
    if status == 403:
        return PermissionDeniedException(detail=detail)
    return ClientException(status_code=status, detail=detail)


def allowed_hosts(allow: dict[str, str], actor: Actor) -> list[str]:
    if actor.via != "api_token":
        return []
    return [p for p in allow.get(actor.token_id, "").split("|") if p]


class Receiver:
    def __init__(self, pool, directory, allow: dict[str, str]) -> None:
        self.pool = pool
        self.directory = directory
        self.allow = allow
        self.stats = RemoteWriteStats()
        self._ids: dict[str, int] = {}  # series key -> prom_series.id
        self._hosts: set[str] = set()  # hosts already in the hosts table from here

    async def receive(self, body: bytes, encoding: str, actor: Actor) -> int:
        st = self.stats
        st.requests += 1
        patterns = allowed_hosts(self.allow, actor)
        if not patterns:
            raise _refuse(st, "not_allowed", "this token may not remote-write (see remote_write_allow)", 403)
        if len(body) > MAX_BODY:
            raise _refuse(st, "too_large", f"body over {MAX_BODY} bytes", 413)
        if encoding.lower() != "snappy":
            raise _refuse(st, "encoding", "Content-Encoding must be snappy (remote-write 1.0)")
        try:
            series = write_request(snappy_decode(body, MAX_DECODED), MAX_SERIES, MAX_SAMPLES)
        except WireError as e:
            raise _refuse(st, "bad_payload", f"cannot decode the write request: {e}") from None
        rows: dict[str, tuple[str, str, dict[str, str], list[tuple[int, float]]]] = {}
        for labels, points in series:
            name, host = labels.get("__name__", ""), labels.get("host", "")
            if not LABEL_NAME.match(name.replace(":", "_")):
                raise _refuse(st, "bad_series", f"series without a valid __name__: {sorted(labels.items())[:5]}")
            if not re.match(HOST_PATTERN, host):
                raise _refuse(st, "no_host", f"{name}: needs a host label ([A-Za-z0-9_-], 1-64; set external_labels)")
            if not any(fnmatch.fnmatchcase(host, p) for p in patterns):
                raise _refuse(st, "host_not_allowed", f"this token may not write host {host!r}", 403)
            if any(not LABEL_NAME.match(k) for k in labels if k != "__name__"):
                raise _refuse(st, "bad_series", f"{name}: a label name is not valid")
            rest = {k: v for k, v in labels.items() if k not in ("__name__", "host")}
            key = json.dumps(sorted(labels.items()), separators=(",", ":"))
            if key in rows:
                rows[key][3].extend(points)
            else:
                rows[key] = (host, name, rest, list(points))
        ids = await self._series_ids(rows)
        # The series of one scrape share their timestamps: each is turned into a datetime once.
        when: dict[int, dt.datetime] = {}
        records = []
        for key, (_, _, _, points) in rows.items():
            series_id = ids[key]
            for t, v in points:
                d = when.get(t)
                if d is None:
                    d = when[t] = dt.datetime.fromtimestamp(t / 1000, dt.UTC)
                records.append((series_id, d, v))
        if records:
            await self._store(records)
        await self._hosts_seen({h for h, _, _, _ in rows.values()})
        st.samples += len(records)
        return len(records)

    async def _store(self, records: list[tuple[int, dt.datetime, float]]) -> None:
        """COPY, the fastest way in; a batch Prometheus sends again (it retries what it could not
        confirm) hits the primary key, and then the same rows go in skipping those already held."""
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "prom_samples", records=records, columns=["series_id", "time", "value"]
                    )
                return
            except asyncpg.UniqueViolationError:
                pass
            sid, times, values = zip(*records, strict=True)
            await conn.execute(
                """INSERT INTO prom_samples (series_id, time, value)
                   SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::float8[]) ON CONFLICT DO NOTHING""",
                list(sid),
                list(times),
                list(values),
            )

    async def _series_ids(self, rows: dict) -> dict[str, int]:
        new = [k for k in rows if k not in self._ids]
        if new:
            got = await self.pool.fetch(
                """INSERT INTO prom_series (key, host, name, labels)
                   SELECT k, h, n, l::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u(k, h, n, l)
                   ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key RETURNING id, key""",
                new,
                [rows[k][0] for k in new],
                [rows[k][1] for k in new],
                [json.dumps(rows[k][2]) for k in new],
            )
            if len(self._ids) > 1_000_000:
                self._ids.clear()
            self._ids.update({r["key"]: r["id"] for r in got})
        return {k: self._ids[k] for k in rows}

    async def _hosts_seen(self, hosts: set[str]) -> None:
        now = time.time()
        for h in hosts:
            if h not in self._hosts and await self.pool.fetchval("SELECT to_regclass('hosts') IS NOT NULL"):
                # Labelled external in the hosts table (the query API's host labels, a restarted
                # gateway's fleet view); an agent's own host info, when there is one, is kept.
                await self.pool.execute(
                    """INSERT INTO hosts (host, labels, last_seen) VALUES ($1, $2::jsonb, now())
                       ON CONFLICT (host) DO UPDATE SET last_seen = now()""",
                    h,
                    json.dumps(EXTERNAL),
                )
                self._hosts.add(h)
            e = self.directory.hosts.get(h)
            if e is None or e.info is None:
                self.directory.info(HostInfo(host=h, ts=now, labels=EXTERNAL))
            self.directory.seen(h, now)
