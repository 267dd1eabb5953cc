"""authcallout: central service that decides NATS logins of hosts registered through the gateway
(nats-server auth callout, ADR-26). Static users never reach it."""
