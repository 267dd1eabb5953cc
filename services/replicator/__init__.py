"""Per-host replicator: the central users table -> this host's local PostgreSQL, which NSS
(libnss-pgsql2) and PAM read, so central accounts can log in on every host."""
