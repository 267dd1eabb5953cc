"""crypt(3) hashes that pam_unix on the hosts can verify, through libpass (the stdlib crypt
module is gone from Python 3.13). New hashes are sha512-crypt; any scheme libpass knows verifies."""

from __future__ import annotations

import asyncio

from passlib.context import CryptContext

# A hash no password matches (what pam_unix treats as a locked account).
LOCKED = "!"


class Hasher:
    def __init__(self, rounds: int) -> None:
        self._ctx = CryptContext(
            schemes=["sha512_crypt", "sha256_crypt", "md5_crypt"], default="sha512_crypt", sha512_crypt__rounds=rounds
        )
        # Verified against when the user does not exist, so a miss costs as much as a hit.
        self._dummy = self._ctx.hash("not-a-real-password")

    def hash(self, password: str) -> str:
        return self._ctx.hash(password)

    def verify(self, password: str, stored: str | None) -> bool:
        # A password crypt(3) cannot take (a NUL) is False either way, for a real hash or the
        # dummy alike: raising for only one of them would tell which accounts exist.
        try:
            if not stored or stored.startswith(("!", "*")):
                self._ctx.verify(password, self._dummy)
                return False
            return self._ctx.verify(password, stored)
        except (ValueError, TypeError):
            return False

    async def hash_async(self, password: str) -> str:
        return await asyncio.to_thread(self.hash, password)

    async def verify_async(self, password: str, stored: str | None) -> bool:
        return await asyncio.to_thread(self.verify, password, stored)
