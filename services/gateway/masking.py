"""What a caller below admin may see of a commander's answer: secret-looking command-line values
(`--password=…`, URLs with a password, tokens) and every environment value masked.

An operator may act on an app or job but is not trusted with the credentials it was given (they
are an admin's); a viewer even less. Admins get the answer as the commander gave it (which
already hides secret-named env values). The audit log is masked once for everyone, before it is
stored (libs/runtime/audit.py), so it is not handled here.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from libs.schemas.secrets import mask_deep

from .authn import Actor
from .roles import allows

T = TypeVar("T", bound=msgspec.Struct)


def sees_secrets(actor: Actor) -> bool:
    return allows(actor.role, "admin")


def for_actor(reply: T, actor: Actor) -> T:
    """`reply` masked unless `actor` is an admin; the same type, so the route's schema holds."""
    if sees_secrets(actor):
        return reply
    # Masking changes the text of strings only, never a type, so the conversion back holds.
    return msgspec.convert(mask_deep(msgspec.to_builtins(reply)), type(reply))
