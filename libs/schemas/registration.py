"""Agent registration: what the gateway stores for a host it registered (KV `fleet_agents`,
key = host id) and the auth callout service reads to let that host's agents in."""

from __future__ import annotations

import hashlib
import hmac

import msgspec

from .codec import Codec


class AgentRecord(msgspec.Struct, kw_only=True, frozen=True):
    v: int = 1
    host: str
    # sha256 of the agent password: it is 32 random bytes, so a fast hash is enough and the
    # callout can check it on every connect without a slow KDF.
    secret_sha256: str
    created_at: float
    created_by: str = ""
    labels: dict[str, str] = {}


AGENT_RECORD = Codec(AgentRecord)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(record: AgentRecord, secret: str) -> bool:
    return hmac.compare_digest(record.secret_sha256, hash_secret(secret))
