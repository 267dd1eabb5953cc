"""What the gateway does to every request and answer, whatever the route:

- a URL with a NUL or another control character is refused (400) before any handler sees it:
  no route has a use for one, and PostgreSQL cannot store a NUL (it would surface as a 500);
- a text value the database cannot store that still reaches a query is a 400, not a 500;
- every answer carries browser hardening headers (CSP, no framing, no sniffing, no referrer);
- log lines (uvicorn's WebSocket and access lines quote the URL) never show a query-string
  secret such as the live routes' `access_token`.
"""

from __future__ import annotations

import logging
import re
import urllib.parse

import asyncpg
from litestar import Request, Response
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import ClientException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from libs.runtime.logs import MASK
from libs.runtime.settings import is_secret_name

from .errors import ErrorBody
from .guard import OPENAPI_PATH

# -- browser headers ---------------------------------------------------------------------------

# The web UI is a Vite build served from this origin: one module script, one stylesheet, fetch()
# to the same origin (the live stream is a fetch-based SSE reader), no inline code, no CDN.
# Element styles the UI sets (virtual-scroll padding, uPlot) go through CSSOM, which
# style-src does not govern, so no 'unsafe-inline' is needed.
UI_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI and ReDoc load their bundles from a CDN with inline bootstrap scripts: those pages
# only forbid being framed.
DOCS_CSP = "frame-ancestors 'none'"
COMMON_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def security_headers(message: Message, scope: Scope) -> None:
    """A before_send hook: on every HTTP answer, routed or not (404s and errors included)."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    path = scope.get("path", "")
    if "content-security-policy" not in headers:
        headers["Content-Security-Policy"] = DOCS_CSP if path.startswith(OPENAPI_PATH) else UI_CSP
    for name, value in COMMON_HEADERS.items():
        if name.lower() not in headers:
            headers[name] = value


# -- control characters in the URL -------------------------------------------------------------


def url_problem(scope: Scope) -> str:
    """Why this request's URL is refused ('' when it is fine)."""
    path = scope.get("path", "")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "the URL path contains a control character (NUL, newline, ...)"
    query = scope.get("query_string", b"")
    if query and b"\x00" in urllib.parse.unquote_to_bytes(query):
        return "the query string contains a NUL character"
    return ""


def refuse_control_chars(app: ASGIApp) -> ASGIApp:
    """Middleware: a bad URL is a ClientException, answered by Litestar as a 400 JSON body (a
    WebSocket handshake is refused instead) before guards and handlers run."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in (ScopeType.HTTP, ScopeType.WEBSOCKET):
            why = url_problem(scope)
            if why:
                raise ClientException(detail=why)
        await app(scope, receive, send)

    return middleware


# Both say "this text cannot be stored": a NUL in a text value, a \u0000 in a JSON one.
UNSTORABLE_TEXT = (asyncpg.exceptions.CharacterNotInRepertoireError, asyncpg.exceptions.UntranslatableCharacterError)


def unstorable_text(request: Request, exc: Exception) -> Response:
    """A NUL that got past the request checks to a query: the client's input, so a 400."""
    return Response(
        ErrorBody(status_code=400, detail="a text value contains a NUL character, which cannot be stored"),
        status_code=400,
    )


# -- log lines ---------------------------------------------------------------------------------

# name=value pairs after ? or & (or ;) in a logged URL; a value ends at a separator, a blank or
# a quote (uvicorn quotes the path it logs).
_QUERY_PAIR = re.compile(r"([?&;])([^=&;\s\"#?]+)=([^&;\s\"#]*)")
# Query names that carry a credential here or in clients' habits, beyond is_secret_name's words
# (which already cover access_token, token, password, secret...).
_SECRET_PARAMS = frozenset({"auth", "authorization", "key", "sig", "signature", "code", "jwt", "session"})


def _secret_param(name: str) -> bool:
    # Percent-decoded first: the app decodes `access%5Ftoken` to `access_token` and accepts it.
    n = urllib.parse.unquote_plus(name).lower()
    return n in _SECRET_PARAMS or is_secret_name(n)


def mask_query_secrets(text: str) -> str:
    if "=" not in text:
        return text
    return _QUERY_PAIR.sub(lambda m: f"{m[1]}{m[2]}={MASK}" if m[3] and _secret_param(m[2]) else m[0], text)


class QuerySecretFilter(logging.Filter):
    """Rewrites a record whose message quotes a URL with a secret parameter. uvicorn logs each
    WebSocket handshake (`"WebSocket /api/v1/ws?access_token=..." [accepted]`) on uvicorn.error
    at INFO, and its access lines the same way: a session token would sit in every log store."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the formatter's to report
            return True
        masked = mask_query_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


# Loggers that quote request URLs: a filter on a logger sees only the records made on it.
URL_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "websockets.server", "litestar")
_FILTER = QuerySecretFilter()


def install_log_masking() -> None:
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
