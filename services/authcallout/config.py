"""FLEETWATCH_AUTHCALLOUT_*."""

from __future__ import annotations

import msgspec

from libs.runtime import LogSettings, NatsSettings


class AuthCalloutConfig(msgspec.Struct, kw_only=True, frozen=True):
    nats: NatsSettings = NatsSettings()
    log: LogSettings = LogSettings()
    # Account nkey seed whose public key is `auth_callout.issuer` in nats.conf (nats-config writes both).
    issuer_seed: str = ""
    # Lifetime of an agent's authorization: when it ends the server disconnects the agent, which
    # reconnects and is asked about again; a revoked host is cut off within this many seconds.
    ttl_s: float = 30.0
    # Account the agents are placed in: "$G" when nats.conf defines users without accounts.
    account: str = "$G"
