"""FLEETWATCH_REPLICATOR_* settings (plus the shared FLEETWATCH_NATS_/HOST_/LOG_ areas)."""

from __future__ import annotations

import msgspec

from libs.runtime import HostSettings, LogSettings, NatsSettings


class ReplicatorConfig(msgspec.Struct, kw_only=True, frozen=True):
    nats: NatsSettings = NatsSettings()
    host: HostSettings = HostSettings()
    log: LogSettings = LogSettings()
    # Both DSNs carry passwords: the names contain "dsn", so logs mask their values.
    central_dsn: str = "postgresql://fleetwatch@127.0.0.1:5432/fleetwatch"
    local_dsn: str = "postgresql://fleetwatch@127.0.0.1:5432/fleetwatch_local"
    interval: float = 120.0  # seconds between scheduled syncs
    debounce: float = 0.2  # a burst of fleet.users.changed events within this window -> one sync
    retry_min: float = 1.0  # first retry after a failed sync; doubles up to retry_max
    retry_max: float = 60.0
    central_timeout: float = 10.0  # connect + query timeout against the central database
    # The host's own accounts: central users with one of their names or uids are not replicated
    # (they are reported in the status). In a container, mount the host's file and point here;
    # empty: no local check (reserved names and ids are still refused).
    local_passwd: str = "/etc/passwd"
