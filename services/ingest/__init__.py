"""ingest: JetStream consumers -> PostgreSQL (TimescaleDB when present). Owns the history schema."""
