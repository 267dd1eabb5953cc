"""One guard on the whole app: the route's minimum role comes from routes.ROUTE_ROLES."""

from __future__ import annotations

import base64

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from .roles import allows

OPENAPI_PATH = "/api/docs"
UI_ASSETS = "/assets"  # the built web UI (ui/dist/assets), served without a token
WS = "WS"
# Every token the gateway issues is URL-safe base64 and `._` (a few hundred characters at most).
MAX_TOKEN = 4096
PROMETHEUS_PATH = "/prometheus/"


def basic_password(value: str) -> str:
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2].strip()


def token_problem(token: str) -> str:
    """Why a presented token cannot be one of ours ('' when it could be). Checked before any
    lookup: hmac.compare_digest refuses non-ASCII text with TypeError and PostgreSQL a NUL."""
    if len(token) > MAX_TOKEN:
        return f"malformed token (longer than {MAX_TOKEN} characters)"
    if not all("!" <= c <= "~" for c in token):
        return "malformed token (printable ASCII only)"
    return ""


def route_key(connection: ASGIConnection) -> str:
    method = WS if connection.scope["type"] == ScopeType.WEBSOCKET else connection.scope["method"]
    if method == "HEAD":
        method = "GET"
    return f"{method} {connection.scope.get('path_template') or connection.scope['path']}"


def bearer(connection: ASGIConnection) -> str:
    auth = connection.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    # Prometheus clients (Grafana's data source, a scraping Prometheus) may only offer basic
    # auth: there the API token is the password (the user name is not read).
    if scheme.lower() == "basic" and connection.scope["path"].startswith(PROMETHEUS_PATH):
        return basic_password(token.strip())
    # Browsers cannot set headers on EventSource/WebSocket: the live routes accept a query token.
    if connection.scope.get("path_template") in ("/api/v1/stream", "/api/v1/ws"):
        return connection.query_params.get("access_token", "")
    return ""


async def role_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    from .routes import ROUTE_ROLES  # the table imports the controllers, which import this module

    key = route_key(connection)
    if key.split(" ", 1)[1].startswith((OPENAPI_PATH, UI_ASSETS)):
        return  # the API documentation and the web UI's static files are public
    if key not in ROUTE_ROLES:
        # create_app refuses to start with a route missing from the table; this is belt and braces.
        raise PermissionDeniedException(detail="route has no role assigned")
    need = ROUTE_ROLES[key]
    if need is None:
        return
    token = bearer(connection)
    if token and (why := token_problem(token)):
        raise NotAuthorizedException(detail=why)
    actor = await connection.app.state.gateway.auth.resolve(token) if token else None
    if actor is None:
        raise NotAuthorizedException(
            detail="a valid bearer token is required" if token == "" else "invalid or expired token"
        )
    if not allows(actor.role, need):
        raise PermissionDeniedException(detail=f"role {need} or higher required (you have {actor.role})")
    connection.state.actor = actor
