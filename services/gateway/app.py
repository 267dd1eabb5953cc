"""`create_app(settings)`: the Litestar application with every controller, the role guard,
OpenAPI (Swagger UI + ReDoc), CORS, request counters, and a lifespan that opens NATS and the
database pool and starts the live-event hub."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from litestar import Litestar, Request, Response
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Receive, Scope, Send

from libs.runtime import open_nats, open_stats
from libs.runtime.db import migrate, open_pool

from .auditing import audit_middleware
from .authn import Actor
from .bootstrap import ensure_admin
from .config import GatewayConfig
from .directory import seed_from_db
from .errors import ErrorBody
from .guard import OPENAPI_PATH, role_guard
from .hardening import UNSTORABLE_TEXT, install_log_masking, refuse_control_chars, security_headers, unstorable_text
from .routes import CONTROLLERS, ROUTE_ROLES
from .servicestats import ServiceScraper, gateway_stats
from .state import Gateway

log = logging.getLogger("fleetwatch.gateway")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ROOT = Path(__file__).resolve().parents[2]


def ui_dir(config: GatewayConfig) -> Path:
    p = Path(config.ui_dir)
    return p if p.is_absolute() else ROOT / p


@contextlib.asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    config: GatewayConfig = app.state.config
    async with contextlib.AsyncExitStack() as stack:
        nc = await open_nats(stack, config.nats, "gateway")
        pool = await open_pool(stack, config.db)
        await migrate(pool, "gateway", MIGRATIONS)
        gw = Gateway(config, nc, pool)
        if not config.secret_key:
            log.warning(
                "FLEETWATCH_GATEWAY_SECRET_KEY not set: sessions are signed with a per-process key "
                "(they end with this process and other replicas refuse them)"
            )
        await ensure_admin(gw)
        gw.hub.listen("frame", gw.directory.frame)
        gw.hub.listen("host", lambda info, _, __: gw.directory.info(info))
        await gw.hub.start(nc)
        # After subscribing, so nothing published meanwhile is missed; live data wins over stored.
        await seed_from_db(gw.directory, pool)
        stack.push_async_callback(gw.hub.stop)
        gw.services = ServiceScraper(
            nc,
            window_s=config.metrics_window_s,
            cache_s=config.metrics_cache_s,
            kinds=tuple(config.metrics_services),
            hosts=gw.directory.hosts.keys,  # agents are asked host by host (servicestats.py)
        )
        await open_stats(stack, nc, "gateway", gateway_stats(gw), description="fleetwatch REST, live stream and web UI")
        gw.loop_lag.start()
        stack.push_async_callback(gw.loop_lag.stop)
        app.state.gateway = gw
        log.info("gateway ready", extra={"event": "ready"})
        yield


def provide_gateway(state: State) -> Gateway:
    return state.gateway


def provide_actor(request: Request) -> Actor:
    # Set by the role guard; a public route never asks for it.
    return request.state.actor


def stats_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            gw = scope["app"].state.get("gateway")
            if gw is not None:
                gw.stats.observe(scope["method"], scope.get("path_template") or "?", status, time.perf_counter() - t0)

    return middleware


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _too_deep(scope: Scope, exc: Exception) -> bool:
    """msgspec gives up on JSON nested past its depth limit with RecursionError, raised while
    Litestar reads the body: the client's fault, not a bug (handlers here do not recurse)."""
    return isinstance(exc, RecursionError) and scope.get("method") in _BODY_METHODS


def body_too_deep(request: Request, exc: RecursionError) -> Response:
    if _too_deep(request.scope, exc):
        return Response(
            ErrorBody(status_code=400, detail="the JSON body is nested too deeply to read"), status_code=400
        )
    return Response(ErrorBody(status_code=500, detail="Internal Server Error"), status_code=500)


async def log_exception(exc: Exception, scope: Scope) -> None:
    # Client errors are answered with their reason; anything else is a bug worth a traceback.
    if (
        (isinstance(exc, HTTPException) and exc.status_code < 500)
        or _too_deep(scope, exc)
        or isinstance(exc, UNSTORABLE_TEXT)
    ):
        return
    log.error("request failed", exc_info=exc, extra={"route": scope.get("path_template") or scope.get("path", "")})


def check_route_table(app: Litestar) -> None:
    """Every served route has a role line and every role line a route: refuse to start otherwise."""
    served: set[str] = set()
    for route in app.routes:
        path = route.path_format or "/"
        if path.startswith(OPENAPI_PATH) or path.startswith("/assets"):
            continue
        methods = getattr(route, "methods", None)
        if route.__class__.__name__ == "WebSocketRoute":
            served.add(f"WS {path}")
            continue
        for m in methods or ():
            if m not in ("HEAD", "OPTIONS"):
                served.add(f"{m} {path}")
    missing = served - ROUTE_ROLES.keys()
    stale = ROUTE_ROLES.keys() - served
    if missing or stale:
        raise RuntimeError(
            f"routes.ROUTE_ROLES out of date: no role for {sorted(missing)}; no route for {sorted(stale)}"
        )


def create_app(settings: GatewayConfig, *, lifespan_enabled: bool = True) -> Litestar:
    install_log_masking()  # before any server logs a URL
    handlers: list = list(CONTROLLERS)
    assets = ui_dir(settings) / "assets"
    if assets.is_dir():
        handlers.append(create_static_files_router(path="/assets", directories=[assets], include_in_schema=False))
    app = Litestar(
        route_handlers=handlers,
        guards=[role_guard],
        dependencies={
            "gw": Provide(provide_gateway, sync_to_thread=False),
            "actor": Provide(provide_actor, sync_to_thread=False),
        },
        lifespan=[lifespan] if lifespan_enabled else [],
        middleware=[stats_middleware, refuse_control_chars, audit_middleware],
        before_send=[security_headers],
        state=State({"config": settings}),
        cors_config=CORSConfig(
            allow_origins=list(settings.cors_origins),
            allow_credentials=False,
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "X-Fleetwatch-Client"],
        )
        if settings.cors_origins
        else None,
        openapi_config=OpenAPIConfig(
            title="fleetwatch gateway",
            version="1.0.0",
            description="REST, live stream and administration of a fleetwatch fleet. Authenticate with `POST /api/v1/auth/login` or an API token; send `Authorization: Bearer <token>`.",
            path=OPENAPI_PATH,
            render_plugins=[SwaggerRenderPlugin(path="/swagger"), RedocRenderPlugin(path="/redoc")],
            components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}),
            security=[{"bearer": []}],
        ),
        after_exception=[log_exception],
        exception_handlers={RecursionError: body_too_deep, **dict.fromkeys(UNSTORABLE_TEXT, unstorable_text)},
        logging_config=None,
        debug=False,
    )
    check_route_table(app)
    document_common_errors(app)
    return app


def document_common_errors(app: Litestar) -> None:
    """Answers every route can give, added to the OpenAPI document once instead of on each
    handler: 401/403 where a role is needed, 503 when NATS or the database is away, 504 where
    the route asks a host's agent and it does not answer."""
    from litestar.openapi.spec import OpenAPIMediaType as OAMediaType
    from litestar.openapi.spec import OpenAPIResponse, OpenAPIType, Reference, Schema

    from .errors import DESCRIPTIONS

    schema = app.openapi_schema
    comps = schema.components.schemas if schema.components and schema.components.schemas else {}
    body_schema = (
        Reference(ref="#/components/schemas/ErrorBody") if "ErrorBody" in comps else Schema(type=OpenAPIType.OBJECT)
    )
    for path, item in (schema.paths or {}).items():
        for method in ("get", "post", "put", "patch", "delete"):
            op = getattr(item, method, None)
            if op is None:
                continue
            codes = [503]
            if ROUTE_ROLES.get(f"{method.upper()} {path}") is not None:
                codes += [401, 403]
            if path.startswith("/api/v1/hosts/{host}/") and not path.endswith(("/metrics", "/processes", "/history")):
                codes.append(504)
            responses = op.responses if op.responses is not None else {}
            for code in codes:
                responses.setdefault(
                    str(code),
                    OpenAPIResponse(
                        description=DESCRIPTIONS[code], content={"application/json": OAMediaType(schema=body_schema)}
                    ),
                )
            op.responses = responses
