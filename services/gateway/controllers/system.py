"""Process health, readiness, Prometheus exposition and the web UI's entry page."""

from __future__ import annotations

import asyncio

from litestar import Controller, MediaType, Response, get

from ..errors import errors
from ..promstats import exposition
from ..state import GatewayDep

FALLBACK_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>fleetwatch</title></head>
<body><h1>fleetwatch gateway</h1><p>The web UI is not built yet. The API is documented at
<a href="/api/docs/swagger">Swagger UI</a> and <a href="/api/docs/redoc">ReDoc</a>
(<a href="/api/docs/openapi.json">OpenAPI document</a>).</p></body></html>"""


class SystemController(Controller):
    tags = ["system"]

    @get("/healthz", summary="The process is up")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", summary="NATS and the database are reachable", responses=errors(503))
    async def readyz(self, gw: GatewayDep) -> Response[dict[str, object]]:
        nats_ok = gw.nc.is_connected
        try:
            db_ok = await asyncio.wait_for(gw.pool.fetchval("SELECT 1"), 2.0) == 1
        except (TimeoutError, OSError, Exception):  # any failure means not ready
            db_ok = False
        ok = nats_ok and db_ok
        return Response(
            {"status": "ok" if ok else "unavailable", "nats": nats_ok, "db": db_ok}, status_code=200 if ok else 503
        )

    @get(
        "/metrics",
        media_type=MediaType.TEXT,
        summary="Prometheus text exposition of the fleet, the gateway and every service ($SRV.STATS)",
    )
    async def metrics(self, gw: GatewayDep) -> Response[str]:
        services = await gw.services.text() if gw.services is not None else ""
        return Response(exposition(gw) + services, media_type="text/plain; version=0.0.4; charset=utf-8")

    @get("/", media_type=MediaType.HTML, include_in_schema=False)
    async def index(self, gw: GatewayDep) -> Response[bytes]:
        from ..app import ui_dir

        index = ui_dir(gw.config) / "index.html"
        if index.is_file():
            return Response(index.read_bytes(), media_type=MediaType.HTML)
        return Response(FALLBACK_PAGE.encode(), media_type=MediaType.HTML)
