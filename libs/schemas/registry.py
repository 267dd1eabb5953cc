"""Every published message type, its codec, and JSON Schema export (`make schemas`)."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from pathlib import Path
from typing import Any

import msgspec

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
            if (
                isinstance(obj, type)
                and issubclass(obj, Message)
                and obj is not Message
                and obj.__module__ == mod.__name__
            ):
                found[obj.__name__] = obj
    return [found[k] for k in sorted(found)]


MESSAGE_TYPES: list[type] = _discover()

CODECS: dict[type, Codec] = {t: Codec(t) for t in MESSAGE_TYPES}


def codec(t: type) -> Codec:
    c = CODECS.get(t)
    if c is None:
        c = CODECS[t] = Codec(t)
    return c


def _normalise(node: Any) -> Any:
    """The schema with every description in one form, whatever msgspec release rendered it.

    msgspec copies docstrings into `description`; 0.23 dedents them, earlier releases kept the
    indentation of continuation lines. `inspect.cleandoc` gives the same text from either, so the
    committed files (and their staleness test) do not change with the library's formatting.
    Checked against msgspec 0.19 (the oldest pyproject allows) and the locked release.
    """
    if isinstance(node, dict):
        out = {
            k: inspect.cleandoc(v) if k in ("description", "title") and isinstance(v, str) else _normalise(v)
            for k, v in node.items()
        }
        # The order of anyOf's alternatives means nothing, and releases list Optional's two
        # (the type and null) in different orders: keep them sorted.
        if isinstance(out.get("anyOf"), list):
            out["anyOf"] = sorted(out["anyOf"], key=lambda alt: json.dumps(alt, sort_keys=True))
        return out
    if isinstance(node, list):
        return [_normalise(v) for v in node]
    return node


def render_schemas() -> dict[str, str]:
    """file name -> JSON Schema text, for every message type."""
    out = {}
    for t in MESSAGE_TYPES:
        schema = _normalise(msgspec.json.schema(t))
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
