"""The gateway's REST API and its server-sent events, from a terminal.

Every failure becomes a `CliError` whose message says what happened in the user's terms: the
gateway's own reason for 4xx/5xx (`role operator or higher required (you have viewer)`), what to
do about a 401, when to retry after a 429."""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import Iterator
from typing import Any

import httpx

from .. import __version__
from .reach import os_reason, unreachable

# What each status means to someone at a terminal; the gateway's detail follows it.
STATUS_TEXT = {
    400: "bad request",
    401: "not authenticated",
    403: "refused",
    404: "not found",
    409: "conflict",
    422: "bad request",
    429: "too many requests",
    500: "gateway error",
    502: "the host answered badly",
    503: "unavailable",
    504: "timed out",
}


class CliError(Exception):
    """Ends the command with exit status 1 (`code` 2 for usage errors) and this message."""

    def __init__(self, message: str, *, status: int | None = None, code: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def error_message(status: int, body: Any, headers: httpx.Headers | dict) -> str:
    detail = ""
    if isinstance(body, dict):
        detail = str(body.get("detail") or "")
        extra = body.get("extra")
        if isinstance(extra, list):  # request validation: which field, why
            parts = [f"{e.get('key', '')}: {e.get('message', '')}".strip(": ") for e in extra if isinstance(e, dict)]
            if parts:
                detail = f"{detail} ({'; '.join(parts)})" if detail else "; ".join(parts)
    elif isinstance(body, str):
        detail = body.strip()[:300]
    text = STATUS_TEXT.get(status, "failed")
    msg = f"{text} ({status})" + (f": {detail}" if detail else "")
    if status == 401:
        msg += " — run `fleetwatch login` (or set FLEETWATCH_TOKEN)"
    if status == 429:
        after = headers.get("retry-after") if headers else None
        if after:
            msg += f" — retry after {after} s"
    return msg


class Client:
    def __init__(self, url: str, token: str = "", *, timeout: float = 90.0, ca_file: str = "") -> None:
        self.url = url
        headers = {
            "User-Agent": f"fleetwatch-cli/{__version__}",
            "Accept": "application/json",
            "X-Fleetwatch-Client": "cli",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        verify: ssl.SSLContext | bool = True
        if ca_file:
            try:
                verify = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise CliError(f"cannot use the CA file {ca_file}: {exc}") from None
        self.http = httpx.Client(
            base_url=url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0), verify=verify
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise CliError(
                    f"the certificate of {self.url} is not trusted ({exc}): give its CA with `fleetwatch login --ca-file` or FLEETWATCH_CA_FILE"
                ) from None
            raise CliError(unreachable("the gateway", self.url, os_reason(exc), "--url or FLEETWATCH_URL")) from None
        except httpx.ConnectTimeout:
            raise CliError(unreachable("the gateway", self.url, "timed out", "--url or FLEETWATCH_URL")) from None
        except httpx.TimeoutException:
            raise CliError(f"the gateway at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise CliError(f"talking to the gateway at {self.url} failed: {exc}") from None

    def request(
        self, method: str, path: str, *, json_body: Any = None, params: dict | None = None, timeout: float | None = None
    ) -> Any:
        kw: dict[str, Any] = {}
        if json_body is not None:
            kw["json"] = json_body
        if params:
            kw["params"] = {k: v for k, v in params.items() if v is not None}
        if timeout is not None:
            kw["timeout"] = timeout
        with self._transport_errors():
            r = self.http.request(method, path, **kw)
        return self._result(r)

    @staticmethod
    def _result(r: httpx.Response) -> Any:
        try:
            body = r.json() if r.content else None
        except ValueError:
            body = r.text
        if r.status_code >= 400:
            raise CliError(error_message(r.status_code, body, r.headers), status=r.status_code)
        return body

    def get(self, path: str, **kw) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw) -> Any:
        return self.request("POST", path, json_body=body if body is not None else {}, **kw)

    def patch(self, path: str, body: Any, **kw) -> Any:
        return self.request("PATCH", path, json_body=body, **kw)

    def delete(self, path: str, **kw) -> Any:
        return self.request("DELETE", path, **kw)

    @contextlib.contextmanager
    def events(
        self, path: str, params: dict | None = None, *, idle_timeout: float = 90.0
    ) -> Iterator[Iterator[tuple[str, Any]]]:
        """Server-sent events of `path` as (event, data) pairs; data is decoded JSON (None for
        heartbeats). The gateway sends a heartbeat at least every 15-30 s, so a read that waits
        `idle_timeout` means the connection is gone."""
        with self._transport_errors():
            with self.http.stream(
                "GET",
                path,
                params=params,
                headers={"Accept": "text/event-stream"},
                timeout=httpx.Timeout(10.0, read=idle_timeout),
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    self._result(r)
                yield self._parse(r)

    def _parse(self, r: httpx.Response) -> Iterator[tuple[str, Any]]:
        event, data = "message", []
        with self._transport_errors():
            for line in r.iter_lines():
                if line == "":
                    if data:
                        raw = "\n".join(data)
                        try:
                            value = json.loads(raw) if raw.strip() else None
                        except ValueError:
                            value = raw
                        yield event, value
                    event, data = "message", []
                    continue
                if line.startswith(":"):
                    yield "heartbeat", None
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
        raise CliError(f"the gateway at {self.url} closed the stream")
