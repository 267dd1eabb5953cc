"""Examples of the service stats contracts (libs.schemas.servicestats) for the schema tests."""

from __future__ import annotations

from libs.schemas.servicestats import ServiceCounters


def schema_examples() -> dict[type, object]:
    return {
        ServiceCounters: ServiceCounters(
            kind="ingest",
            instance="central-1:4242",
            ts=1.0,
            uptime_s=12.5,
            counters={"messages_in": 10, "dead_letters": 1},
            gauges={"stream_clients": 3.0},
            consumer_pending={"ingest_metrics": 7},
            queues={"batches_ready": 2},
        )
    }
