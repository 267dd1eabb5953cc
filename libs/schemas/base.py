"""The base every message derives from.

Schema evolution rule: add fields only with defaults, never change a field's meaning; bump `v`
when a reader should know that newer fields are present. Unknown fields are ignored on decode,
so a version-N reader accepts a version-N+1 message.
"""

from __future__ import annotations

import msgspec


class Message(msgspec.Struct, kw_only=True, frozen=True):
    v: int = 1


class Part(msgspec.Struct, kw_only=True, frozen=True):
    """A nested value inside a message (not published on its own)."""
