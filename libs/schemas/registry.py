"""Every published message type, its codec, and JSON Schema export (`make schemas`)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

import importlib
import pkgutil

from .base import Message
from .codec import Codec


def _discover() -> list[type]:
    """Every Message subclass defined in a module of this package, in a stable order.

    A new message module needs no registration: defining the Struct is enough.
    """
    import libs.schemas as pkg

    found: dict[str, type] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name in ("registry", "base", "codec"):
            continue
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, Message) and obj is not Message and obj.__module__ == mod.__name__:
                found[obj.__name__] = obj
    return [found[k] for k in sorted(found)]


MESSAGE_TYPES: list[type] = _discover()

CODECS: dict[type, Codec] = {t: Codec(t) for t in MESSAGE_TYPES}


def codec(t: type) -> Codec:
    c = CODECS.get(t)
    if c is None:
        c = CODECS[t] = Codec(t)
    return c


def render_schemas() -> dict[str, str]:
    """file name -> JSON Schema text, for every message type."""
    out = {}
    for t in MESSAGE_TYPES:
        schema = msgspec.json.schema(t)
        out[f"{t.__name__}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        p = directory / name
        p.write_text(text)
        written.append(p)
    return written


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")
    for p in write_schemas(target):
        print(p)
