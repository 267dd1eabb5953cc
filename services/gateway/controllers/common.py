"""Parameter types and helpers the read controllers share."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Annotated, Any

from litestar.exceptions import ClientException
from litestar.params import Parameter, QueryParameter

HOST_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
HostParam = Annotated[str, Parameter(pattern=HOST_PATTERN, description="host id", max_length=64)]
# Unix seconds; the API speaks floats so scripts and the UI need no date parsing.
TimeParam = Annotated[float | None, Parameter(ge=0, le=1e11, description="unix seconds")]
# `from` is a Python keyword: bound as `from_` (one Parameter: nested Annotated would drop the alias).
FromParam = Annotated[float | None, QueryParameter(name="from", ge=0, le=1e11, description="unix seconds")]
LimitParam = Annotated[int, Parameter(ge=1, le=1000)]
OffsetParam = Annotated[int, Parameter(ge=0, le=1_000_000)]


def utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def time_range(from_: float | None, to: float | None, default_span: float = 3600.0) -> tuple[float, float]:
    to = time.time() if to is None else to
    from_ = to - default_span if from_ is None else from_
    if from_ > to:
        raise ClientException(detail="'from' must not be after 'to'")
    return from_, to


async def table_exists(pool, name: str) -> bool:
    return bool(await pool.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


def typed(fn: Callable, name: str, annotations: dict[str, Any]) -> Callable:
    """A handler made by a factory, given the real types and the name a hand-written one would
    have: Litestar reads both (validation, injection, the OpenAPI schema and operationId)."""
    fn.__name__ = fn.__qualname__ = name
    fn.__annotations__ = annotations
    return fn
