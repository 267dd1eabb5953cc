"""Message contracts: round-trips, forward compatibility, typed errors, published JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from libs.schemas import Codec, DecodeError, subjects
from libs.schemas.events import (
    AlertEvent,
    AppStatus,
    AuditRecord,
    HealthResult,
    LogBatch,
    LogLine,
    ReplicationStatus,
    UserChange,
)
from libs.schemas.ids import InvalidId, check_host_id, host_id_from_hostname
from libs.schemas.metrics import (
    CpuStats,
    DiskUsage,
    GpuProcess,
    GpuStats,
    HostInfo,
    MemStats,
    MetricFrame,
    NetIface,
    ProcessSnapshot,
    ProcInfo,
)
from libs.schemas.registry import MESSAGE_TYPES, render_schemas

ROOT = Path(__file__).resolve().parents[2]

FRAME = MetricFrame(
    host="web-1",
    ts=1700000000.5,
    boot=1700000000000,
    seq=7,
    cpu=CpuStats(
        percent=12.5, per_core=[10.0, 15.0], count=2, count_physical=1, freq_mhz=2400.0, load1=0.5, iowait=0.1
    ),
    mem=MemStats(total=8 << 30, available=4 << 30, used=3 << 30, percent=50.0),
    disks=[DiskUsage(mount="/", device="/dev/vda1", fstype="ext4", total=100, used=40, free=60, percent=40.0)],
    net_ifaces=[NetIface(name="eth0", bytes_recv=1000.0)],
    gpus=[
        GpuStats(
            index=0,
            uuid="GPU-1",
            name="H100",
            util_percent=88.0,
            mem_used=1,
            mem_total=2,
            processes=[GpuProcess(pid=5, mem_used=1)],
        )
    ],
)

EXAMPLES = {
    MetricFrame: FRAME,
    ProcessSnapshot: ProcessSnapshot(
        host="web-1", ts=1.0, total=300, procs=[ProcInfo(pid=1, name="init", cpu_percent=0.1, rss=1024)]
    ),
    HostInfo: HostInfo(host="web-1", ts=1.0, os="Debian 12", kernel="6.1", labels={"role": "web"}),
    AppStatus: AppStatus(host="web-1", app="api", state="running", ts=1.0, pid=42),
    HealthResult: HealthResult(
        check="site", target="http://x/health", ts=1.0, ok=False, status_code=500, latency_ms=3.2
    ),
    AlertEvent: AlertEvent(
        fingerprint="abc", rule="cpu_high", host="web-1", state="firing", ts=2.0, since=1.0, value=95.0, threshold=90.0
    ),
    AuditRecord: AuditRecord(
        id="a1", ts=1.0, host="web-1", actor="alice", action="apps.restart", target="api", params={"x": 1}
    ),
    UserChange: UserChange(ts=1.0, op="created", username="bob", user_id=3),
    ReplicationStatus: ReplicationStatus(host="web-1", ts=1.0, ok=True, added=3),
    LogBatch: LogBatch(host="web-1", app="api", lines=[LogLine(ts=1.0, line="hello")]),
}

from tests.support.commander import control_examples  # noqa: E402

EXAMPLES.update(control_examples())

from tests.support.replicator import schema_examples as replicator_examples  # noqa: E402

EXAMPLES.update(replicator_examples())

from tests.support.alerting import schema_examples as alerting_examples  # noqa: E402

EXAMPLES.update(alerting_examples())

from tests.support.servicestats import schema_examples as servicestats_examples  # noqa: E402

EXAMPLES.update(servicestats_examples())


def test_every_message_type_has_an_example():
    assert set(EXAMPLES) == set(MESSAGE_TYPES)


@pytest.mark.parametrize("t", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_round_trip(t):
    codec = Codec(t)
    msg = EXAMPLES[t]
    data = codec.encode(msg)
    assert json.loads(data)["v"] == 1  # JSON on the wire, versioned
    assert codec.decode(data) == msg


@pytest.mark.parametrize("t", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_reader_accepts_unknown_fields_from_a_newer_writer(t):
    codec = Codec(t)
    obj = json.loads(codec.encode(EXAMPLES[t]))
    obj["v"] = 2
    obj["field_added_in_v2"] = {"anything": [1, 2, 3]}
    decoded = codec.decode(json.dumps(obj).encode())
    assert decoded.v == 2
    assert msgspec.structs.replace(decoded, v=1) == EXAMPLES[t]


def test_malformed_payload_raises_typed_error_with_field_path():
    codec = Codec(MetricFrame)
    obj = json.loads(codec.encode(FRAME))
    obj["cpu"]["percent"] = "very high"
    with pytest.raises(DecodeError) as ei:
        codec.decode(json.dumps(obj).encode())
    assert ei.value.path == "$.cpu.percent"
    assert "float" in ei.value.reason

    obj = json.loads(codec.encode(FRAME))
    obj["disks"][0]["total"] = None
    with pytest.raises(DecodeError) as ei:
        codec.decode(json.dumps(obj).encode())
    assert ei.value.path == "$.disks[0].total"

    with pytest.raises(DecodeError) as ei:
        codec.decode(b"\x00\xffnot json")
    assert ei.value.path == "$"

    obj = json.loads(codec.encode(FRAME))
    del obj["mem"]
    with pytest.raises(DecodeError) as ei:
        codec.decode(json.dumps(obj).encode())
    assert "mem" in ei.value.reason


def test_json_schemas_in_docs_are_current():
    """`make schemas` regenerates docs/schemas; this fails when someone forgot."""
    rendered = render_schemas()
    on_disk = {p.name: p.read_text() for p in (ROOT / "docs" / "schemas").glob("*.json")}
    stale = sorted(n for n in rendered if on_disk.get(n) != rendered[n])
    extra = sorted(set(on_disk) - set(rendered))
    assert not stale and not extra, f"docs/schemas is stale (run `make schemas`): changed={stale} extra={extra}"


def test_host_ids():
    assert host_id_from_hostname("web-1.example.com") == "web-1-example-com"
    assert check_host_id("a_B-9") == "a_B-9"
    for bad in ["", "a.b", "a b", "x" * 65, "a*", "a>", "$SYS"]:
        with pytest.raises(InvalidId):
            check_host_id(bad)


def test_subject_builders_refuse_wildcards_and_dots():
    assert subjects.metrics("web-1") == "fleet.metrics.web-1"
    assert subjects.ctl("web-1", "apps.start") == "fleet.ctl.web-1.apps.start"
    assert subjects.logs("web-1", "api") == "fleet.logs.web-1.api"
    for bad in ["*", ">", "a.b", ""]:
        with pytest.raises(InvalidId):
            subjects.metrics(bad)
        with pytest.raises(InvalidId):
            subjects.logs("web-1", bad)
