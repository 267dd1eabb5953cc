"""alerter: health checks, metric rules, host-down/app/replication alerts, alert state machine in
NATS KV, silences, grouping and Telegram/email/webhook notifications."""
