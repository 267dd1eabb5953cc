"""The error body every 4xx/5xx has (Litestar's), for the OpenAPI document."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec

DESCRIPTIONS = {
    400: "bad request (the detail says what)",
    401: "no valid token",
    403: "role too low, or account deactivated",
    404: "not found",
    409: "conflict",
    429: "too many attempts; see Retry-After",
    502: "the host answered with something malformed",
    503: "not available now (connection cap, or a dependency missing)",
    504: "the host did not answer in time",
}


class ErrorBody(msgspec.Struct, kw_only=True, frozen=True):
    status_code: int
    detail: str
    extra: dict[str, Any] | list[Any] | None = None


def errors(*codes: int) -> dict[int, ResponseSpec]:
    return {c: ResponseSpec(data_container=ErrorBody, description=DESCRIPTIONS.get(c, "error")) for c in codes}
