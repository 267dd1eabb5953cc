"""NATS JWTs (ed25519-nkey): decode the server's authorization request, encode the user claims
and the authorization response, signed with the issuer account's nkey."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import nacl.signing
import nkeys

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class BadToken(ValueError):
    pass


def decode(token: str | bytes, *, verify: bool = True) -> dict[str, Any]:
    """The claims of a JWT; with `verify`, the signature must be the issuer's (`iss`)."""
    text = token.decode() if isinstance(token, bytes) else token
    parts = text.strip().split(".")
    if len(parts) != 3:
        raise BadToken("not a JWT")
    try:
        claims = json.loads(_unb64(parts[1]))
        sig = _unb64(parts[2])
    except (ValueError, json.JSONDecodeError) as exc:
        raise BadToken(f"undecodable JWT: {exc}") from None
    if verify:
        try:
            verify_key(str(claims.get("iss", ""))).verify(f"{parts[0]}.{parts[1]}".encode(), sig)
        except Exception:
            raise BadToken("JWT signature does not match its issuer") from None
    return claims


def verify_key(public: str) -> nacl.signing.VerifyKey:
    """An nkey public key (prefix byte, 32 key bytes, CRC16) as an ed25519 verify key."""
    raw = base64.b32decode(public + "=" * (-len(public) % 8))
    if len(raw) != 35 or nkeys.crc16_checksum(raw[:-2]) != raw[-2:]:
        raise BadToken("malformed nkey")
    return nacl.signing.VerifyKey(raw[1:33])


def encode(claims: dict[str, Any], signer: nkeys.KeyPair) -> str:
    body = dict(claims)
    body.setdefault("iat", int(time.time()))
    body["iss"] = signer.public_key.decode()
    body.pop("jti", None)
    # jti: hash of the claims without it, as the Go library computes it.
    body["jti"] = (
        base64.b32encode(hashlib.sha256(json.dumps(body, separators=(",", ":"), sort_keys=True).encode()).digest())
        .decode()
        .rstrip("=")
    )
    h = _b64(json.dumps(HEADER, separators=(",", ":")).encode())
    p = _b64(json.dumps(body, separators=(",", ":")).encode())
    sig = signer.sign(f"{h}.{p}".encode())
    return f"{h}.{p}.{_b64(sig)}"


def user_claims(user_nkey: str, name: str, account: str, permissions: dict, ttl_s: float) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": user_nkey,
        "name": name,
        "aud": account,
        "iat": now,
        "exp": now + max(1, int(ttl_s)),
        "nats": {
            "pub": {"allow": permissions["publish"]["allow"]},
            "sub": {"allow": permissions["subscribe"]["allow"]},
            "resp": {"max": 1, "ttl": 5 * 60 * 1_000_000_000},
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
            "version": 2,
        },
    }


def response_claims(user_nkey: str, server_id: str, *, user_jwt: str = "", error: str = "") -> dict[str, Any]:
    nats: dict[str, Any] = {"type": "authorization_response", "version": 2}
    if user_jwt:
        nats["jwt"] = user_jwt
    if error:
        nats["error"] = error
    return {"sub": user_nkey, "aud": server_id, "nats": nats}
