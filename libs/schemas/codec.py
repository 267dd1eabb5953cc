"""One reused encoder and one decoder per type; decoding never trusts input."""

from __future__ import annotations

import re
from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")

_PATH_RE = re.compile(r" - at `(?P<path>[^`]*)`$")

# msgspec encoders are stateless and thread-safe; one serves every type.
_ENCODER = msgspec.json.Encoder()


class DecodeError(ValueError):
    """A payload that is not valid JSON or does not match the message type.

    `path` is the JSON path of the offending field (`$.cpu.percent`), or `$` when the
    payload is not JSON at all.
    """

    def __init__(self, type_name: str, reason: str, path: str = "$") -> None:
        super().__init__(f"{type_name}: {reason} (at {path})")
        self.type_name = type_name
        self.reason = reason
        self.path = path


class Codec(Generic[T]):
    __slots__ = ("type", "name", "_decoder")

    def __init__(self, type_: type[T]) -> None:
        self.type = type_
        self.name = getattr(type_, "__name__", str(type_))
        self._decoder = msgspec.json.Decoder(type_)

    def encode(self, obj: T) -> bytes:
        return _ENCODER.encode(obj)

    def decode(self, data: bytes | bytearray | memoryview | str) -> T:
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            msg = str(exc)
            m = _PATH_RE.search(msg)
            path = m.group("path") if m else "$"
            reason = msg[: m.start()] if m else msg
            raise DecodeError(self.name, reason, path) from None
        except msgspec.DecodeError as exc:
            raise DecodeError(self.name, f"malformed JSON: {exc}", "$") from None
        except RecursionError:  # msgspec's depth limit, where a field takes any JSON
            raise DecodeError(self.name, "JSON nested too deeply", "$") from None


def encode(obj: Any) -> bytes:
    """Encode any message (or plain data) with the shared encoder."""
    return _ENCODER.encode(obj)


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)
