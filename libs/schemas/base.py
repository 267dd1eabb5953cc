"""The base every message derives from.

Schema evolution rule: add fields only with defaults, never change a field's meaning; bump `v`
when a reader should know that newer fields are present. Unknown fields are ignored on decode,
so a version-N reader accepts a version-N+1 message.
"""

from __future__ import annotations

import msgspec


# gc=False: messages are trees of values decoded from bytes (or built to be encoded); they never
# reference themselves, so the cycle collector need not track them. Ingest and the gateway decode
# thousands a second, and untracked structs made MetricFrame decoding ~15 % faster and spare
# every generation-0 collection from walking the batches in flight.
#
# Subclasses inherit frozen (and gc) at run time, but each one repeats `frozen=True`: type
# checkers read the class keywords through dataclass_transform, which does not carry them down,
# and would otherwise take the subclass for a mutable dataclass deriving from a frozen one.
class Message(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    v: int = 1


class Part(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A nested value inside a message (not published on its own)."""
