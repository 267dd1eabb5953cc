"""Commander pieces that need no server: reconciliation table, unit rendering (checked by
systemd-analyze when present), log rotation under a live writer, rate limit, validation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from libs.schemas.control import AppSpec, BinaryRun, PythonRun
from services.commander import logfiles
from services.commander.errors import CtlError
from services.commander.jobs import new_job_id
from services.commander.process_backend import restart_delay
from services.commander.ratelimit import RateLimiter
from services.commander.reconcile import classify
from services.commander.systemd_backend import render_unit
from services.commander.validate import Validator


@pytest.mark.parametrize(
    "active,sub,seen,want",
    [
        ("active", "running", True, "running"),
        ("active", "running", False, "crashed"),
        ("activating", "auto-restart", False, "crashed"),
        ("inactive", "dead", True, "zombie"),
        ("inactive", "dead", False, "stopped"),
        ("failed", "failed", False, "failed"),
        ("failed", "failed", True, "failed"),
        ("activating", "start", False, "starting"),
        ("deactivating", "stop-sigterm", True, "stopping"),
        ("maintenance", "", False, "unknown"),
    ],
)
def test_reconciliation_table(active, sub, seen, want):
    assert classify(active, sub, seen) == want


def test_unit_quotes_arguments_and_disables_expansion(tmp_path):
    script = tmp_path / "a b.py"
    script.write_text("print(1)\n")
    spec = AppSpec(
        name="x",
        run=PythonRun(script=str(script)),
        cwd=str(tmp_path),
        env={"MSG": 'say "hi" $HOME 100%'},
        user="daemon",
        restart="always",
        max_retries=4,
    )
    unit = render_unit(spec, ["/usr/bin/python3", str(script), "$(reboot)", "50%"])
    assert f'ExecStart="/usr/bin/python3" "{script}" "$$(reboot)" "50%%"' in unit
    assert 'Environment="MSG=say \\"hi\\" $HOME 100%%"' in unit
    assert "User=daemon" in unit and "Restart=always" in unit and "StartLimitBurst=5" in unit
    assert "NoNewPrivileges=yes" in unit and "ProtectSystem=full" in unit
    analyze = shutil.which("systemd-analyze")
    if analyze:  # systemd's own parser accepts it (offline check; nothing is loaded)
        path = tmp_path / "fleetwatch-x.service"
        path.write_text(unit)
        r = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "fleetwatch-x.service:" not in r.stderr, r.stderr


def test_rotation_keeps_a_live_writer_appending(tmp_path):
    log = tmp_path / "app.log"
    fd = logfiles.open_for_child(log)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfor i in range(400):\n    print('x' * 99, flush=True)\n    time.sleep(0.002)\n",
        ],
        stdout=fd,
        stderr=fd,
    )
    os.close(fd)
    rotations = 0
    deadline = time.monotonic() + 30
    while child.poll() is None and time.monotonic() < deadline:
        rotations += logfiles.rotate_if_needed(log, 5000, 2)
        time.sleep(0.01)
    child.wait(10)
    assert rotations >= 2
    assert log.with_name("app.log.1").exists() and log.with_name("app.log.2").exists()
    assert not log.with_name("app.log.3").exists()
    # After truncation the writer continues at the start of the file (O_APPEND), no hole of NULs.
    data = log.read_bytes()
    assert b"\x00" not in data and len(data) < 5000 + 100 * 400
    assert logfiles.tail(log, 3) == ["x" * 99] * 3


def test_follower_reads_new_complete_lines_across_truncation(tmp_path):
    log = tmp_path / "f.log"
    log.write_text("old\n")
    f = logfiles.Follower(log)
    with open(log, "a") as w:
        w.write("one\ntw")
    assert f.read_new() == ["one"]
    with open(log, "a") as w:
        w.write("o\n")
    assert f.read_new() == ["two"]
    log.write_text("")
    with open(log, "a") as w:
        w.write("after\n")
    assert f.read_new() == ["after"]


def test_rate_limit_one_per_interval():
    now = [100.0]
    rl = RateLimiter(1.0, clock=lambda: now[0])
    assert rl.allow("app:a") == 0
    assert 0.99 <= rl.allow("app:a") <= 1.0
    assert rl.allow("app:b") == 0
    now[0] += 1.0
    assert rl.allow("app:a") == 0


def test_validator_denylist_allowlist_and_env(tmp_path):
    v = Validator(["rm"], [])
    with pytest.raises(CtlError) as ei:
        v.check_job(["/bin/rm", "-rf", "/"], "", "", {})
    assert ei.value.code == 400 and "denylist" in ei.value.message
    strict = Validator([], ["python3"])
    with pytest.raises(CtlError) as ei:
        strict.check_job(["uptime"], "", "", {})
    assert ei.value.code == 403 and "allowlist" in ei.value.message
    assert strict.check_job(["python3", "-V"], "", "", {})[0].endswith("python3")
    with pytest.raises(CtlError):
        v.check_env({"OK_NAME": "1", "BAD=NAME": "2"})
    with pytest.raises(CtlError) as ei:
        v.check_spec(AppSpec(name="x", run=BinaryRun(argv=["true"]), cwd=str(tmp_path / "missing")))
    assert "working directory" in ei.value.message
    with pytest.raises(CtlError) as ei:
        v.check_spec(AppSpec(name="bad.name", run=BinaryRun(argv=["true"])))
    assert "app name" in ei.value.message


def test_restart_backoff_jitter_never_passes_the_cap():
    import random

    def top(lo: float, hi: float) -> float:
        return hi

    def bottom(lo: float, hi: float) -> float:
        return lo

    cap, jitter = AppSpec(name="x", run=BinaryRun(argv=["true"])).backoff_max_s, 0.2
    assert cap == 15.0  # PM2's cap
    # Below the cap: ±20 % of 1 s × 1.5^n.
    assert restart_delay(0, 1.0, cap, jitter, top) == pytest.approx(1.2)
    assert restart_delay(0, 1.0, cap, jitter, bottom) == pytest.approx(0.8)
    assert restart_delay(3, 1.0, cap, jitter, top) == pytest.approx(3.375 * 1.2)
    # At the cap (1.5^7 = 17 s): the upper jitter is cut at 15 s (it used to reach 18 s); the
    # lower one still spreads programs that fail together over 12-15 s.
    for step in (7, 8, 30, 10**6):
        assert restart_delay(step, 1.0, cap, jitter, top) == cap
        assert restart_delay(step, 1.0, cap, jitter, bottom) == pytest.approx(cap * (1 - jitter))
    # Just below the cap (1.5^6 = 11.4 s): +20 % would be 13.7 s, under the cap, kept.
    assert restart_delay(6, 1.0, cap, jitter, top) == pytest.approx(1.5**6 * 1.2)
    rng = random.Random(7)
    samples = [restart_delay(step, 1.0, cap, jitter, rng.uniform) for step in range(40) for _ in range(50)]
    assert max(samples) <= cap and min(samples) >= 0.8
    capped = [restart_delay(20, 1.0, cap, jitter, rng.uniform) for _ in range(200)]
    assert min(capped) >= 12.0 and max(capped) <= 15.0 and max(capped) - min(capped) > 1.0  # still spread


def test_job_ids():
    import re

    ids = {new_job_id(0) for _ in range(50)}
    assert len(ids) == 50 and all(re.fullmatch(r"job_19700101_000000_[0-9a-f]{6}", i) for i in ids)


def test_log_lines_parse_with_time_and_stream_or_fall_back():
    assert logfiles.parse("1733300000.250000 err boom: x y", 5.0) == (1733300000.25, "stderr", "boom: x y")
    assert logfiles.parse("1733300000.000000 out ", 5.0) == (1733300000.0, "stdout", "")
    # a line from before logtee (or not its format) keeps the fallback time, as stdout
    assert logfiles.parse("plain old line", 5.0) == (5.0, "stdout", "plain old line")
    assert logfiles.parse("12:00 err x", 5.0) == (5.0, "stdout", "12:00 err x")
