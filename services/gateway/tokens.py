"""Session tokens (HMAC-signed, stateless) and API tokens (random, stored hashed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

import msgspec

API_PREFIX = "fwk_"


class SessionClaims(msgspec.Struct, kw_only=True, frozen=True):
    uid: int
    u: str
    exp: float
    n: str = ""
    iat: float = 0.0  # issue time: sessions older than the account's last password change are refused


_claims_codec = msgspec.json.Decoder(SessionClaims)
_enc = msgspec.json.Encoder()


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Signer:
    def __init__(self, key: str) -> None:
        self._key = (key or secrets.token_hex(32)).encode()

    def issue(self, user_id: int, username: str, ttl_s: float, iat: float | None = None) -> tuple[str, float]:
        iat = time.time() if iat is None else iat
        exp = iat + ttl_s
        body = _b64(_enc.encode(SessionClaims(uid=user_id, u=username, exp=exp, n=secrets.token_hex(4), iat=iat)))
        return f"{body}.{self._sign(body)}", exp

    def verify(self, token: str) -> SessionClaims | None:
        body, _, sig = token.partition(".")
        if not body or not sig or not hmac.compare_digest(sig, self._sign(body)):
            return None
        try:
            claims = _claims_codec.decode(_unb64(body))
        except (msgspec.DecodeError, ValueError):
            return None
        return claims if claims.exp > time.time() else None

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


def new_api_token() -> tuple[str, str, str]:
    """(token id, full token shown once, hash to store)."""
    tid = secrets.token_hex(6)
    token = f"{API_PREFIX}{tid}_{secrets.token_urlsafe(32)}"
    return tid, token, hash_api_token(token)


def hash_api_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_token_id(token: str) -> str | None:
    if not token.startswith(API_PREFIX):
        return None
    tid, sep, _ = token[len(API_PREFIX) :].partition("_")
    return tid if sep and tid else None
