"""Calling a host's commander (`fleet.ctl.<host>.<verb>`) and turning its micro errors into HTTP.

The request always carries the authenticated actor, so the host's audit record names a person."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from litestar.exceptions import HTTPException
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from libs.schemas import subjects

from ..auditing import current_source

T = TypeVar("T")
_ENC = msgspec.json.Encoder()
# Commander codes pass through; its 500 is the host's failure, which the gateway reports as 502.
HTTP_OF = {400: 400, 403: 403, 404: 404, 409: 409, 429: 429, 500: 502}


async def call(nc, host: str, verb: str, body: dict[str, Any], reply_type: type[T], timeout: float = 30.0) -> T:
    # The door the change came through (ui, cli, api-token, webhook, api), for the host's audit.
    body = {**body, "source": current_source()}
    try:
        msg = await nc.request(subjects.ctl(host, verb), _ENC.encode(body), timeout=timeout)
    except NoRespondersError:
        raise HTTPException(
            status_code=503, detail=f"no commander answers for host {host!r} (not running, or the host is unknown)"
        ) from None
    except NatsTimeout:
        raise HTTPException(
            status_code=504, detail=f"the commander of host {host!r} did not answer within {timeout:g}s"
        ) from None
    hdr = msg.headers or {}
    code = hdr.get("Nats-Service-Error-Code")
    if code:
        try:
            status = HTTP_OF.get(int(code), 502)
        except ValueError:
            status = 502
        raise HTTPException(
            status_code=status, detail=hdr.get("Nats-Service-Error", "the commander refused the request")
        )
    try:
        return msgspec.json.decode(msg.data, type=reply_type)
    except msgspec.DecodeError as exc:
        raise HTTPException(
            status_code=502, detail=f"the commander of host {host!r} answered something malformed: {exc}"
        ) from None
