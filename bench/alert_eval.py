"""Benchmark: alert rule evaluations per second (rules × hosts × series) on a stream of frames.

RESULT lines:
  alert_eval            evaluations/s of the alerter's frame path (decode + every rule against
                        the frame + state lookups), one core (goal >= 100,000/s)
  alert_eval_vs_raw     that ÷ evaluations/s of a straightforward hand-written loop doing the
                        same comparisons on the same frames (decode included, no state, no
                        precompiled field access), measured in the same run
  alert_eval_frames     frames/s through the rule path
  alert_eval_rules, alert_eval_hosts

Frames come from fleetwatch's Simulator; 5 % of the instances start firing, so the state
machine's "nothing changes" decisions are exercised on real records, not only empty ones.
"""

from __future__ import annotations

import os
import time

from fleetwatch.simulate import Simulator
from libs.schemas import Codec
from libs.schemas.alerting import AlertRecord, Rule
from libs.schemas.metrics import MetricFrame
from services.alerter.evaluate import Engine
from services.alerter.store import StateStore

HOSTS = int(os.environ.get("BENCH_ALERT_HOSTS", "200"))
ROUNDS = int(os.environ.get("BENCH_ALERT_ROUNDS", "30"))
SECONDS = float(os.environ.get("BENCH_ALERT_SECONDS", "4"))

FIELDS = [
    ("cpu.percent", ">", 90, 80),
    ("cpu.load1", ">", 16, 12),
    ("cpu.iowait", ">", 30, 20),
    ("mem.percent", ">", 90, 85),
    ("swap.percent", ">", 50, 40),
    ("disk.percent", ">", 90, 85),
    ("disk.free", "<", 1 << 30, 2 << 30),
    ("net.errin", ">", 10, 5),
    ("procs.zombie", ">", 5, 2),
    ("gpu.temperature", ">", 85, 80),
]


def rules() -> list[Rule]:
    out = []
    for i, (field, op, thr, res) in enumerate(FIELDS):
        out.append(Rule(name=f"r{i}_warn", field=field, op=op, threshold=thr, resolve=res, for_s=60))
        out.append(
            Rule(
                name=f"r{i}_crit",
                field=field,
                op=op,
                threshold=thr * (1.05 if op == ">" else 0.5),
                for_s=0,
                severity="critical",
            )
        )
    return out


def result(name: str, value: float, unit: str) -> None:
    print(f"RESULT {name} {value:.4g} {unit}", flush=True)


def raw_loop(frames: list[MetricFrame], rs: list[Rule]) -> int:
    """The baseline: the same comparisons written out by hand, no engine, no state."""
    n = 0
    hits = 0
    for fr in frames:
        for r in rs:
            part, _, name = r.field.partition(".")
            if part in ("disk", "gpu"):
                items = fr.disks if part == "disk" else fr.gpus
                vals = [getattr(x, name) for x in items]
            else:
                vals = [getattr(getattr(fr, part), name)]
            for v in vals:
                if v is None:
                    continue
                n += 1
                if (v > r.threshold) if r.op == ">" else (v < r.threshold):
                    hits += 1
    return n


def timed(fn, payloads) -> tuple[float, int]:
    """Repeat over the payloads for about SECONDS; (evaluations/s, frames)."""
    t0 = time.process_time()
    evals = frames = 0
    while time.process_time() - t0 < SECONDS:
        evals += fn(payloads)
        frames += len(payloads)
    return evals / (time.process_time() - t0), frames


def main() -> None:
    sim = Simulator(HOSTS, interval=5.0, seed=7)
    hist = sim.history(ROUNDS)
    codec = Codec(MetricFrame)
    payloads = [codec.encode(f) for f in hist]
    rs = rules()

    state = StateStore(kv=None)  # records only; this path never writes
    engine = Engine(state, repeat_s=4 * 3600, silenced=lambda r, now: False, on_change=None)
    engine.set_rules(rs)
    # Make 5 % of the instances firing already (notified recently) so lookups hit real records.
    warm = 0
    for f in hist[:HOSTS]:
        for cr in engine.metric:
            for labels, _v in cr.extract(f):
                warm += 1
                if warm % 20 == 0:
                    inst = cr.instance(f.host, labels)
                    state.records[inst.fp] = AlertRecord(
                        fingerprint=inst.fp,
                        rule=inst.rule,
                        kind="metric",
                        host=f.host,
                        state="firing",
                        since=f.ts,
                        active_since=f.ts,
                        notified="firing",
                        notified_at=f.ts + 10 * 86400,
                    )

    decode = codec.decode

    def engine_path(ps) -> int:
        before = engine.evaluations
        for p in ps:
            fr = decode(p)
            engine.frame_work(fr, fr.ts)
        return engine.evaluations - before

    def raw_path(ps) -> int:
        return raw_loop([decode(p) for p in ps], rs)

    engine_path(payloads)  # warm caches (instances, host selection)
    raw_rate, _ = timed(raw_path, payloads)
    eng_rate, frames = timed(engine_path, payloads)
    t0 = time.process_time()
    engine_path(payloads)
    fps = len(payloads) / (time.process_time() - t0)

    result("alert_eval", eng_rate, "evals/s")
    result("alert_eval_vs_raw", eng_rate / raw_rate, "ratio")
    result("alert_eval_raw", raw_rate, "evals/s")
    result("alert_eval_frames", fps, "frames/s")
    result("alert_eval_rules", len(rs), "rules")
    result("alert_eval_hosts", HOSTS, "hosts")


if __name__ == "__main__":
    main()
