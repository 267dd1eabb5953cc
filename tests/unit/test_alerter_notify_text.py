"""What a person reads in a notification: values formatted for their field, a fleet-wide alert
named so, and a link to the UI's page for the alert at the configured public address."""

from __future__ import annotations

from libs.schemas.alerting import AlertRecord
from services.alerter.config import AlerterConfig, public_url
from services.alerter.notify.templates import Note, fmt_value, render


def _rec(**kw) -> AlertRecord:
    base = dict(fingerprint="fp1", rule="r", kind="metric", host="web-1", state="firing", since=1000.0)
    return AlertRecord(**{**base, **kw})


def test_values_read_by_field():
    assert fmt_value("procs.zombie", 503.0) == "503"  # a count is an integer, not "503.00"
    assert fmt_value("cpu.percent", 91.234) == "91.2%"
    assert fmt_value("disk.percent", 90) == "90.0%"
    assert fmt_value("mem.available", 512 * 1024**2) == "512.0 MiB"
    assert fmt_value("disk.free", 3.5 * 1024**3) == "3.5 GiB"
    assert fmt_value("disk_io.write_bps", 2048) == "2.0 KiB/s"
    assert fmt_value("gpu.mem_used", 4000) == "4000 MiB"
    assert fmt_value("cpu.load1", 2.345) == "2.35"
    assert fmt_value("", None) == "-"


def test_notice_text_and_link():
    rec = _rec(value=503.0, threshold=100.0, field="procs.zombie", summary="zombies")
    subject, text = render([Note(record=rec, kind="firing")], 1060, "https://fleet.example/")
    assert "value: 503 (threshold 100)" in text and "503.00" not in text
    assert "details: https://fleet.example/#/alerts/fp1" in text
    fleet = _rec(host="_fleet", kind="check", labels={"check": "site", "target": "http://x"}, summary="site down")
    subject, text = render([Note(record=fleet, kind="firing")], 1060, "http://ui")
    assert subject == "[FIRING] site down on fleet-wide" and "_fleet" not in subject + text
    two = [Note(record=fleet, kind="firing"), Note(record=_rec(fingerprint="fp2", host="_fleet"), kind="firing")]
    subject, _ = render(two, 1060, "http://ui")
    assert "_fleet" not in subject and "fleet-wide" in subject


def test_public_url_comes_from_settings_then_gateway_address():
    assert public_url(AlerterConfig(ui_url="https://a.example/"), {}) == "https://a.example"
    env = {"FLEETWATCH_PUBLIC_URL": "https://fleet.example/", "FLEETWATCH_GATEWAY_PORT": "9000"}
    assert public_url(AlerterConfig(), env) == "https://fleet.example"
    # no public URL: the gateway's listen address, a wildcard bind made reachable as loopback
    gw = {"FLEETWATCH_GATEWAY_HOST": "0.0.0.0", "FLEETWATCH_GATEWAY_PORT": "9000"}
    assert public_url(AlerterConfig(), gw) == "http://127.0.0.1:9000"
    assert public_url(AlerterConfig(), {"FLEETWATCH_GATEWAY_HOST": "10.0.0.5"}) == "http://10.0.0.5:8080"


def test_history_spelling_of_a_field_is_accepted():
    from types import SimpleNamespace

    from services.alerter.fields import UnknownField, compile_field, normalize

    assert normalize("cpu_percent") == "cpu.percent" and normalize("disk_io_write_bps") == "disk_io.write_bps"
    assert normalize("disk_percent") == "disk.percent" and normalize("cpu.percent") == "cpu.percent"
    # an extractor reads attributes only: a stand-in frame with the two parts it reads
    frame = SimpleNamespace(cpu=SimpleNamespace(percent=42.0), disk_io=SimpleNamespace(write_bps=7.0))
    assert compile_field("cpu_percent")(frame) == [((), 42.0)]  # type: ignore[arg-type]
    assert compile_field("disk_io_write_bps")(frame) == [((), 7.0)]  # type: ignore[arg-type]
    try:
        compile_field("cpu_nonsense")
    except UnknownField:
        pass
    else:
        raise AssertionError("an unknown field must be refused")
