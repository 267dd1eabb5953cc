"""Rules every fleet wants, on unless `FLEETWATCH_ALERTER_BUILTIN_RULES=false`. A stored rule
of the same name replaces one (store it with `enabled: false` to switch it off)."""

from __future__ import annotations

from libs.schemas.alerting import Rule

BUILTIN_RULES: tuple[Rule, ...] = (
    Rule(name="host_down", kind="host_down", missed_intervals=3, severity="critical", summary="host stopped reporting"),
    Rule(
        name="disk_full",
        kind="metric",
        field="disk.percent",
        op=">",
        threshold=90,
        resolve=85,
        for_s=300,
        severity="warning",
        summary="disk almost full",
    ),
    Rule(
        name="app_failed",
        kind="app",
        states=["crashed", "zombie", "failed", "fatal"],
        severity="critical",
        summary="app crashed, zombie or failed",
    ),
    Rule(name="replica_failing", kind="replica", severity="warning", summary="user replication failing"),
)
