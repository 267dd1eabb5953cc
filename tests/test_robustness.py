"""Robustness audit: every subject a service subscribes to or consumes gets malformed payloads
(published with the credentials that may publish there), against the real services as
subprocesses on a nats-server of the test's own and the real PostgreSQL.

What must hold afterwards: every service still runs and still does its job; every message its
type cannot decode is on `fleet.deadletter.<service>` with a reason header; every request/reply
endpoint answered a clear 400 with a reason instead of silence; a message of a newer version
with extra fields is accepted, not dead-lettered."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import msgspec
import pytest

from libs.runtime import connect
from libs.runtime.jetstream import provision
from libs.schemas import (
    AlertEvent,
    AppStatus,
    AuditRecord,
    Codec,
    DecodeError,
    HealthResult,
    HostInfo,
    MetricFrame,
    ProcessSnapshot,
    ReplicationStatus,
    subjects,
)
from libs.schemas.alerting import AlertingReply
from libs.schemas.events import LogBatch, LogLine, UserChange
from libs.schemas.replication import SyncRequest
from libs.schemas.streams import H_REASON, H_SUBJECT, STREAMS
from services.alerter.api import KIND
from services.commander.service import CODECS as CTL_CODECS
from services.ingest.decode import EVENT_KINDS
from tests.support.alerting import frame as make_frame
from tests.support.gateway import create_database, drop_database
from tests.support.pipeline import poll, wait_until
from tests.support.robustness import HOST, Fleet

pytestmark = pytest.mark.timeout(240)

HUGE = 150_000
PAYLOADS: dict[str, bytes] = {
    "not-json": b"this is {not json",
    "wrong-types": b'{"v": "one", "ts": "yesterday", "host": 7, "actor": ["x"], "op": 3, "name": {}}',
    "missing-fields": b'{"v": 1}',
    "huge-string": b'"' + b"A" * HUGE + b'"',
    "huge-fields": json.dumps({"v": 1, "actor": "B" * HUGE, "name": "C" * HUGE, "host": "D" * HUGE}).encode(),
    "non-utf8": b"\xff\xfe\xfd{\x80\x81}",
    "empty": b"",
    # Deep nesting where a type takes any JSON (audit params): past msgspec's depth limit.
    "deep": b'{"v": 1, "id": "deep", "ts": 1, "host": "host-a", "actor": "a", "action": "b", "params": {"p": '
    + b"[" * 5000
    + b"]" * 5000
    + b"}}",
}

# What each consumed stream subject carries (the types ingest and the alerter decode them as).
STREAM_TYPES: dict[str, type] = {
    subjects.METRICS_ALL: MetricFrame,
    subjects.PROCS_ALL: ProcessSnapshot,
    subjects.HOSTS_ALL: HostInfo,
    subjects.APPS_ALL: AppStatus,
    subjects.HEALTH_ALL: HealthResult,
    subjects.ALERTS_ALL: AlertEvent,
    subjects.REPLICA_ALL: ReplicationStatus,
    subjects.AUDIT_ALL: AuditRecord,
    subjects.USERS_CHANGED: UserChange,
}
# Who consumes which stream subject and dead-letters what it cannot decode. The gateway's live
# hub also reads them but only skips and counts: ingest quarantines what the streams carry.
CONSUMERS: dict[str, set[str]] = {
    subjects.METRICS_ALL: {"ingest", "alerter"},
    subjects.APPS_ALL: {"ingest", "alerter"},
    subjects.REPLICA_ALL: {"ingest", "alerter"},
    subjects.USERS_CHANGED: {"replicator"},
}


def concrete(wildcard: str) -> str:
    """A subject of the wildcard that host-a's agents or a central service would use."""
    tokens = wildcard.split(".")
    if tokens[-1] != "*":
        return wildcard
    ids = ["fuzz"] if tokens[1] == "health" else [HOST, "fuzz"]
    return ".".join(tokens[:2] + ids[: len(tokens) - 2])


def undecodable(codec: Codec, data: bytes) -> bool:
    try:
        codec.decode(data)
        return False
    except DecodeError:
        return True


def forward(obj: msgspec.Struct) -> bytes:
    """A message of a newer version: `v` bumped and fields this code does not know."""
    d = msgspec.to_builtins(obj)
    d.update(v=99, added_in_v99={"nested": [1, 2, 3]}, another_new_field="x")
    return json.dumps(d).encode()


class DeadLetters:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, str, bytes]] = []  # (service, original subject, reason, data)

    async def cb(self, msg) -> None:
        h = msg.headers or {}
        self.items.append((subjects.token(msg.subject, 2), h.get(H_SUBJECT, ""), h.get(H_REASON, ""), bytes(msg.data)))

    def find(self, service: str, subject: str, data: bytes):
        return [it for it in self.items if it[0] == service and it[1] == subject and it[3] == data]


def ctl_reply(msg) -> tuple[int, str]:
    h = msg.headers or {}
    if "Nats-Service-Error-Code" in h:
        return int(h["Nats-Service-Error-Code"]), h.get("Nats-Service-Error", "")
    return 200, ""


async def log_follow_survives_malformed_batches(http, fleet, agent, dls: DeadLetters, headers: dict) -> None:
    """`fleet.logs.<host>.<app>` is read by the gateway alone, while someone follows an app's
    logs: a batch it cannot decode is dead-lettered (nobody else would), the next good one is
    streamed."""
    spec = {"name": "fuzzapp", "run": {"runtime": "binary", "argv": ["sleep", "120"]}, "restart": "never"}
    r = await http.post(f"/api/v1/hosts/{HOST}/apps", json={"spec": spec}, headers=headers)
    assert r.status_code == 201, r.text
    subject = subjects.logs(HOST, "fuzzapp")
    good = Codec(LogBatch).encode(
        LogBatch(host=HOST, app="fuzzapp", lines=[LogLine(ts=time.time(), line="after the fuzz")])
    )
    bad = [PAYLOADS[k] for k in ("not-json", "wrong-types", "non-utf8", "huge-string")]
    async with http.stream("GET", f"/api/v1/hosts/{HOST}/apps/fuzzapp/logs/stream", headers=headers) as resp:
        assert resp.status_code == 200

        async def publish() -> None:
            # The gateway subscribes as it opens the stream; publish until the good batch is read.
            while True:
                for data in bad:
                    await agent.publish(subject, data)
                await agent.publish(subject, good)
                await agent.flush()
                await asyncio.sleep(0.5)

        pub = asyncio.create_task(publish())
        try:

            async def streamed():
                async for line in resp.aiter_lines():
                    if "after the fuzz" in line:
                        return

            await asyncio.wait_for(streamed(), 30)
        finally:
            pub.cancel()
    await wait_until(
        lambda: _async(all(dls.find("gateway", subject, d) for d in bad)),
        30,
        what="malformed log batches dead-lettered by the gateway",
    )


async def _async(value):
    return value


def test_fuzzed_subjects_cover_every_consumed_subject():
    """The list above is every stream subject a central service consumes and every subject an
    agent subscribes to (derived from the definitions, so a new one fails here until fuzzed)."""
    streamed = {s for spec in STREAMS if spec.name not in ("DEADLETTER", "AGENT_DEADLETTER") for s in spec.subjects}
    assert streamed == set(STREAM_TYPES), streamed ^ set(STREAM_TYPES)
    agent = {s for s in subjects.host_subjects_subscribe(HOST) if s.startswith("fleet.")}
    covered = {subjects.ctl(HOST, ">"), subjects.sample(HOST), subjects.sync(HOST), subjects.USERS_CHANGED}
    stats_only = {subjects.service_stats(k, HOST) for k in subjects.AGENT_KINDS}  # micro stats endpoint, no body read
    assert agent - stats_only == covered, agent - stats_only - covered


def test_codec_refuses_nesting_past_the_depth_limit_as_a_decode_error():
    """msgspec raises RecursionError, not a DecodeError, for JSON nested past its limit where a
    field takes any JSON: without the codec's translation that message was a poison pill that
    ingest redelivered for ever and the commander answered with a 500."""
    with pytest.raises(DecodeError) as err:
        Codec(AuditRecord).decode(PAYLOADS["deep"])
    assert err.value.path == "$" and "nested too deeply" in err.value.reason
    assert Codec(AuditRecord).decode(PAYLOADS["deep"].replace(b"[" * 5000 + b"]" * 5000, b"[[[]]]")).params == {
        "p": [[[]]]
    }


async def test_malformed_messages_on_every_subject(fresh_nats, pg_cluster, db_dsn, workdir):
    st = fresh_nats
    admin = await connect(st.settings("admin"), "fuzz-admin", retry_forever=False)
    await provision(admin)
    agent = await connect(st.agent_settings(HOST), "fuzz-agent", retry_forever=False)
    gateway_id = await connect(st.settings("gateway"), "fuzz-gateway", retry_forever=False)
    alerter_id = await connect(st.settings("alerter"), "fuzz-alerter", retry_forever=False)
    local = await create_database(pg_cluster.dsn, "fuzzlocal")
    dls = DeadLetters()
    await admin.subscribe("fleet.deadletter.>", cb=dls.cb)
    fleet = Fleet(st, db_dsn, local, workdir)
    try:
        await fleet.start(admin)
        # Who may publish where: the host's agent its own subjects, central services the rest.
        publisher = {
            subjects.HEALTH_ALL: alerter_id,
            subjects.ALERTS_ALL: alerter_id,
            subjects.USERS_CHANGED: gateway_id,
        }
        expected: list[tuple[str, str, bytes]] = []

        # -- streams: ingest (and the alerter, the replicator) consume them ---------------------
        for wildcard, type_ in STREAM_TYPES.items():
            subject = concrete(wildcard)
            nc = publisher.get(wildcard, agent)
            codec = Codec(type_)
            for name, data in PAYLOADS.items():
                if wildcard == subjects.USERS_CHANGED:
                    await nc.publish(subject, data)  # core NATS, as the gateway sends it (EVENTS keeps a copy)
                else:
                    await nc.jetstream().publish(subject, data, timeout=15)
                if undecodable(codec, data):
                    for svc in CONSUMERS.get(wildcard, {"ingest"}):
                        expected.append((svc, subject, data))
                else:
                    raise AssertionError(f"{name} decodes as {type_.__name__}: not a malformed payload")
        await agent.flush()
        await gateway_id.flush()

        # -- request/reply: commander, collector, replicator, alerter --------------------------
        async def ask(subject: str, data: bytes):
            return await gateway_id.request(subject, data, timeout=30)

        ctl_cases = [(verb, name, data) for verb in CTL_CODECS for name, data in PAYLOADS.items()]
        replies = await asyncio.gather(
            *(ask(subjects.ctl(HOST, verb), data) for verb, _, data in ctl_cases), return_exceptions=True
        )
        for (verb, name, data), msg in zip(ctl_cases, replies, strict=True):
            assert not isinstance(msg, BaseException), f"commander {verb} {name}: no answer ({msg!r})"
            code, reason = ctl_reply(msg)
            if undecodable(CTL_CODECS[verb], data):
                assert code == 400 and reason, f"commander {verb} {name}: {code} {reason!r}"
                expected.append(("commander", subjects.ctl(HOST, verb), data))
            else:  # decodes: refused with a reason (actor missing, unknown app...) or served
                assert code == 200 or (400 <= code < 500 and reason), f"commander {verb} {name}: {code} {reason!r}"

        sample_codec = Codec(dict)
        for name, data in PAYLOADS.items():
            msg = await ask(subjects.sample(HOST), data)
            code, reason = ctl_reply(msg)
            if data.strip() and undecodable(sample_codec, data):
                assert code == 400 and "sample" in reason, f"collector {name}: {code} {reason!r}"
                expected.append(("collector", subjects.sample(HOST), data))
            else:
                assert code == 200 and Codec(MetricFrame).decode(msg.data).host == HOST, f"collector {name}"

        for name, data in PAYLOADS.items():
            msg = await ask(subjects.sync(HOST), data)
            code, reason = ctl_reply(msg)
            status = Codec(ReplicationStatus).decode(msg.data)
            if data.strip() and undecodable(Codec(SyncRequest), data):
                assert code == 400 and "malformed" in reason and not status.ok, f"replicator {name}: {code} {reason!r}"
                expected.append(("replicator", subjects.sync(HOST), data))
            else:
                assert code == 200 and status.ok, f"replicator {name}: {status}"

        alerting = (
            [("alerts", "list")] + [(r, v) for r in KIND for v in ("list", "put", "delete")] + [("notifiers", "test")]
        )
        for resource, verb in alerting:
            for name, data in PAYLOADS.items():
                reply = Codec(AlertingReply).decode((await ask(subjects.alerting(resource, verb), data)).data)
                assert reply.code != 500, f"alerter {resource}.{verb} {name}: {reply}"
                if name in ("not-json", "wrong-types", "huge-string", "non-utf8"):
                    assert not reply.ok and reply.code == 400 and reply.error, (
                        f"alerter {resource}.{verb} {name}: {reply}"
                    )
                    expected.append(("alerter", subjects.alerting(resource, verb), data))

        # -- a newer version with extra fields is accepted everywhere --------------------------
        boot = int(time.time())
        d = json.loads(forward(make_frame(HOST, time.time(), 1, cpu=12.5)))
        d["boot"] = boot
        fwd_frame = json.dumps(d).encode()
        await agent.jetstream().publish(subjects.metrics(HOST), fwd_frame, timeout=15)
        fwd_change = forward(UserChange(ts=time.time(), op="updated", username="nobody-fuzz"))
        await gateway_id.publish(subjects.USERS_CHANGED, fwd_change)
        code, reason = ctl_reply(
            await ask(
                subjects.ctl(HOST, "apps.list"),
                forward(msgspec.convert({"actor": "fuzz"}, CTL_CODECS["apps.list"].type)),
            )
        )
        assert code == 200, reason
        msg = await ask(subjects.sync(HOST), forward(SyncRequest(actor="fuzz")))
        assert ctl_reply(msg)[0] == 200 and Codec(ReplicationStatus).decode(msg.data).ok
        assert (
            Codec(AlertingReply)
            .decode(
                (await ask(subjects.alerting("alerts", "list"), b'{"v": 99, "include_inactive": true, "new": 1}')).data
            )
            .ok
        )

        # -- well-typed but extreme (150 KB identifiers): stored, or quarantined with a reason --
        now = time.time()
        mark = f"huge-{uuid.uuid4().hex}-"
        big = mark + "X" * HUGE
        extreme = {
            "apps": AppStatus(host=HOST, app=big, state="running", ts=now, detail=big),
            "health": HealthResult(check=big, target=big, ts=now, ok=False, error=big),
            "alerts": AlertEvent(
                fingerprint=big, rule=big, host=HOST, state="firing", ts=now, since=now, labels={big: big}, summary=big
            ),
            "audit": AuditRecord(
                id=big, ts=now, host=HOST, actor=big, action=big, target=big, params={big: big}, error=big
            ),
            "replica": ReplicationStatus(host=HOST, ts=now, ok=False, error=big),
        }
        extreme_data = {}
        for kind, obj in extreme.items():
            subject = concrete(next(w for w in STREAM_TYPES if w.split(".")[1] == kind))
            extreme_data[kind] = Codec(type(obj)).encode(obj)
            await (
                publisher.get(next(w for w in STREAM_TYPES if w.split(".")[1] == kind), agent)
                .jetstream()
                .publish(subject, extreme_data[kind], timeout=15)
            )

        async def extreme_settled():
            left = []
            for kind, data in extreme_data.items():
                table = EVENT_KINDS[kind][1]
                stored = await poll(
                    db_dsn, f"SELECT count(*) FROM {table} t WHERE strpos(row_to_json(t)::text, $1) > 0", mark
                )
                if not stored and not [it for it in dls.items if it[0] == "ingest" and it[3] == data and it[2]]:
                    left.append(kind)
            return not left or None

        try:
            await wait_until(extreme_settled, 60, what="every extreme message stored or dead-lettered")
        except AssertionError:
            raise AssertionError(f"extreme messages neither stored nor dead-lettered\n{fleet.tails()}") from None

        # -- nothing lost: every undecodable message is quarantined, with its reason ----------
        async def all_quarantined():
            return not [e for e in expected if not dls.find(*e)]

        try:
            await wait_until(all_quarantined, 60, what="every undecodable message on fleet.deadletter.<service>")
        except AssertionError:
            missing = sorted({(s, sub, len(d)) for s, sub, d in expected if not dls.find(s, sub, d)})
            raise AssertionError(f"not dead-lettered: {missing}\n{fleet.tails()}") from None
        for svc, subject, data in expected:
            assert all(r for _, _, r, _ in dls.find(svc, subject, data)), f"{svc} {subject}: no reason header"
        # ...and the forward-compatible ones are not.
        assert not [it for it in dls.items if it[3] in (fwd_frame, fwd_change)], (
            "a newer version with extra fields was dead-lettered"
        )

        # -- every service still runs and still does its job ---------------------------------
        fleet.check_alive()
        assert await wait_until(
            lambda: poll(db_dsn, "SELECT count(*) FROM metrics WHERE host = $1 AND boot = $2", HOST, boot),
            60,
            what="the v99 frame stored",
        ), "forward frame not stored"
        ok_frame = make_frame(HOST, time.time(), 2)
        d = msgspec.to_builtins(ok_frame)
        d["boot"] = boot
        await agent.jetstream().publish(subjects.metrics(HOST), json.dumps(d).encode(), timeout=15)
        await wait_until(
            lambda: poll(db_dsn, "SELECT count(*) = 2 FROM metrics WHERE host = $1 AND boot = $2", HOST, boot),
            60,
            what="a valid frame after the fuzz stored",
        )
        assert ctl_reply(await ask(subjects.ctl(HOST, "apps.list"), b'{"actor": "fuzz"}'))[0] == 200
        assert Codec(MetricFrame).decode((await ask(subjects.sample(HOST), b"")).data).host == HOST
        assert Codec(ReplicationStatus).decode((await ask(subjects.sync(HOST), b"")).data).ok
        assert Codec(AlertingReply).decode((await ask(subjects.alerting("alerts", "list"), b"{}")).data).ok
        async with httpx.AsyncClient(base_url=fleet.gw.url, timeout=30) as http:
            assert (await http.get("/readyz")).status_code == 200
            hosts = await http.get("/api/v1/hosts", headers=fleet.gw.headers("viewer"))
            assert hosts.status_code == 200 and HOST in hosts.text
            # Bad API requests: a 4xx with a reason, never a 500 nor a hang.
            admin_h = {**fleet.gw.headers("admin"), "Content-Type": "application/json"}
            routes = [
                ("POST", "/api/v1/auth/login"),
                ("POST", "/api/v1/users"),
                ("PATCH", "/api/v1/users/admin"),
                ("POST", "/api/v1/auth/tokens"),
                ("POST", "/api/v1/hosts"),
                ("POST", f"/api/v1/hosts/{HOST}/jobs"),
                ("POST", f"/api/v1/hosts/{HOST}/apps"),
                ("PUT", "/api/v1/rules/fuzz"),
                ("PUT", "/api/v1/notifiers/fuzz"),
                ("POST", "/api/v1/silences"),
            ]
            bad_bodies = {k: v for k, v in PAYLOADS.items() if k != "missing-fields"} | {
                "list": b"[1, 2]",
                "nested": b"[" * 5000 + b"]" * 5000,
            }
            refused = []
            for method, path in routes:
                for name, body in bad_bodies.items():
                    r = await http.request(method, path, content=body, headers=admin_h)
                    reason = (
                        r.json().get("detail", "")
                        if r.headers.get("content-type", "").startswith("application/json")
                        else ""
                    )
                    if not (400 <= r.status_code < 500 and reason):
                        refused.append(f"{method} {path} {name}: {r.status_code} {r.text[:200]}")
            assert not refused, "\n".join(refused) + "\n" + fleet.gw.log()[-3000:]
            await log_follow_survives_malformed_batches(http, fleet, agent, dls, admin_h)
        fleet.check_alive()
        for name, text in fleet.logs().items():
            assert "Traceback" not in text, f"{name} logged a traceback:\n{text[-3000:]}"
            errors = [line for line in text.splitlines() if '"level": "error"' in line or '"level": "critical"' in line]
            assert not errors, f"{name} logged errors: {errors[:5]}"
    finally:
        fleet.stop()
        for c in (agent, gateway_id, alerter_id, admin):
            await c.close()
        await drop_database(pg_cluster.dsn, local)
