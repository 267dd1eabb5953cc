"""Typed settings from FLEETWATCH_* environment variables.

A settings class is a msgspec Struct with defaults; field `interval` of a class loaded with
prefix `FLEETWATCH_COLLECTOR_` is read from `FLEETWATCH_COLLECTOR_INTERVAL`. A nested Struct field
`nats` reads `FLEETWATCH_NATS_*` (shared areas keep their own prefix, see SHARED_PREFIXES).
Lists accept JSON or comma-separated text, dicts accept JSON or `k=v,k=v`.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import msgspec

# A settings class is a Struct: its fields and their types are read from msgspec.structs.fields.
T = TypeVar("T", bound=msgspec.Struct)

ROOT_PREFIX = "FLEETWATCH_"


class SettingsError(ValueError):
    """A bad or missing setting; the message names the environment variable."""

    def __init__(self, variable: str, expected: str, got: str | None = None, detail: str = "") -> None:
        msg = f"{variable}: expected {expected}"
        if got is not None:
            msg += f", got {got!r}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)
        self.variable = variable


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is None:
        return getattr(tp, "__name__", str(tp))
    args = ", ".join(_type_name(a) for a in typing.get_args(tp))
    return f"{getattr(origin, '__name__', str(origin))}[{args}]"


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _raw_to_builtin(raw: str, tp: Any) -> Any:
    """Turn the text of an env var into something msgspec.convert can check against `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in args if a is not type(None)]
        if raw == "" and type(None) in args:
            return None
        if len(non_none) == 1:
            return _raw_to_builtin(raw, non_none[0])
        return raw
    if origin in (list, tuple, set, frozenset):
        text = raw.strip()
        if text.startswith("["):
            return json.loads(text)
        return [p.strip() for p in text.split(",") if p.strip()]
    if origin is dict:
        text = raw.strip()
        if text.startswith("{"):
            return json.loads(text)
        out = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            k, sep, v = part.partition("=")
            if not sep:
                raise ValueError(f"{part!r} is not key=value")
            out[k.strip()] = v.strip()
        return out
    return raw


def load_settings(cls: type[T], prefix: str = ROOT_PREFIX, env: Mapping[str, str] | None = None) -> T:
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(cls):
        tp = hints[field.name]
        if _is_struct(tp):
            sub_prefix = SHARED_PREFIXES.get(tp, f"{prefix}{field.name.upper()}_")
            values[field.name] = load_settings(tp, sub_prefix, env)
            continue
        var = f"{prefix}{field.name.upper()}"
        env_required = field.name in getattr(cls, "ENV_REQUIRED", ())
        if var not in env or (env_required and not env[var].strip()):
            if field.required or env_required:
                raise SettingsError(var, _type_name(tp), detail="required but not set")
            continue
        raw = env[var]
        try:
            values[field.name] = msgspec.convert(_raw_to_builtin(raw, tp), tp, strict=False)
        except (msgspec.ValidationError, ValueError) as exc:
            shown = "***" if is_secret_name(field.name) else raw
            raise SettingsError(var, _type_name(tp), shown, str(exc).split(" - at ")[0]) from None
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise SettingsError(prefix + "*", cls.__name__, detail=str(exc)) from None


SECRET_WORDS = (
    "password",
    "secret",
    "token",
    "passwd",
    "creds",
    "credentials",
    "api_key",
    "private_key",
    "dsn",
    "seed",
)


def is_secret_name(name: str) -> bool:
    n = name.lower()
    return any(w in n for w in SECRET_WORDS)


class NatsSettings(msgspec.Struct, kw_only=True, frozen=True):
    """FLEETWATCH_NATS_*: how every service reaches NATS."""

    # The loader refuses to start without FLEETWATCH_NATS_URL (or with it empty): a service that
    # quietly dialled the default (its own loopback, e.g. inside a container) would wait forever
    # for a server that is not there. The default stays for settings built in code.
    ENV_REQUIRED: ClassVar[frozenset[str]] = frozenset({"url"})

    url: str = "nats://127.0.0.1:4222"  # comma-separated for a cluster
    user: str = ""
    password: str = ""
    creds: str = ""  # path of a .creds file (JWT + nkey seed)
    inbox_prefix: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    connect_timeout: float = 5.0
    reconnect_wait: float = 1.0

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]


class LogSettings(msgspec.Struct, kw_only=True, frozen=True):
    """FLEETWATCH_LOG_*."""

    level: str = "INFO"
    format: str = "json"  # json | text


SHARED_PREFIXES: dict[type, str] = {
    NatsSettings: "FLEETWATCH_NATS_",
    LogSettings: "FLEETWATCH_LOG_",
}


class DbSettings(msgspec.Struct, kw_only=True, frozen=True):
    """FLEETWATCH_DB_*: the central PostgreSQL."""

    dsn: str = "postgresql://fleetwatch@127.0.0.1:5432/fleetwatch"
    pool_min: int = 1
    pool_max: int = 10


class HostSettings(msgspec.Struct, kw_only=True, frozen=True):
    """FLEETWATCH_HOST_*: who this host is (per-host agents)."""

    id: str = ""  # default: the hostname with dots as '-'
    labels: dict[str, str] = {}

    @property
    def host_id(self) -> str:
        import socket

        from libs.schemas.ids import check_host_id, host_id_from_hostname

        return check_host_id(self.id) if self.id else host_id_from_hostname(socket.gethostname())


SHARED_PREFIXES[DbSettings] = "FLEETWATCH_DB_"
SHARED_PREFIXES[HostSettings] = "FLEETWATCH_HOST_"
