"""JSON structured logging that never prints secrets.

Two guards: record fields whose names look secret are masked, and every secret value the process
knows (registered from its settings) is replaced wherever it appears in a message.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from .settings import LogSettings, is_secret_name

MASK = "***"
_secrets: set[str] = set()

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def register_secret(value: str | None) -> None:
    if value and len(value) >= 4:
        _secrets.add(value)


def register_secrets_from(settings: Any) -> None:
    """Register every secret-looking string field of a settings Struct (recursively)."""
    import msgspec

    for f in msgspec.structs.fields(settings):
        val = getattr(settings, f.name)
        if isinstance(val, msgspec.Struct):
            register_secrets_from(val)
        elif isinstance(val, str) and is_secret_name(f.name):
            register_secret(val)


def redact(text: str) -> str:
    for s in _secrets:
        if s in text:
            text = text.replace(s, MASK)
    return text


def mask_mapping(data: Any) -> Any:
    """Copy of a dict/list with secret-named keys masked (for audit params, API echo...)."""
    if isinstance(data, dict):
        return {
            k: (MASK if isinstance(k, str) and is_secret_name(k) and v not in (None, "") else mask_mapping(v))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [mask_mapping(v) for v in data]
    if isinstance(data, str):
        return redact(data)
    return data


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for k, v in record.__dict__.items():
            if k in _STD_ATTRS or k.startswith("_"):
                continue
            out[k] = MASK if is_secret_name(k) else mask_mapping(v)
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS and not k.startswith("_")}
        tail = " ".join(f"{k}={MASK if is_secret_name(k) else mask_mapping(v)}" for k, v in extras.items())
        t = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{t} {record.levelname:<7} {self.service}: {redact(record.getMessage())}"
        if tail:
            line += " " + tail
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def setup_logging(service: str, settings: LogSettings | None = None, stream: Any = None) -> logging.Logger:
    settings = settings or LogSettings()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service) if settings.format == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # nats-py logs every reconnect attempt at ERROR level through its own logger; our callbacks
    # already report connection state once per change.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    return logging.getLogger(service)
