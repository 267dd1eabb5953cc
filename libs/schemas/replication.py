"""Replication requests (the replicator's own contracts besides ReplicationStatus in events)."""

from __future__ import annotations

from .base import Message


class SyncRequest(Message, kw_only=True, frozen=True):
    """Body of a request on `fleet.sync.<host>`: run a replication now. An empty body means the
    defaults. The reply is the ReplicationStatus of a sync that started after the request."""

    actor: str = ""  # who asked (the gateway's authenticated user), named in the audit record
    source: str = ""  # the door the request came through (ui, cli, api-token, api), for audit
