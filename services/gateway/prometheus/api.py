"""Prometheus's HTTP API on the gateway (`/prometheus/api/v1/...`, `/prometheus/federate`), held to
what Grafana's Prometheus data source and promtool send: GET or form-encoded POST, `match[]`
repeated, times as RFC 3339 or Unix seconds, steps as seconds or durations. Answers and errors
use Prometheus's JSON envelope ({"status": "error", "errorType": "bad_data", ...} with 400)."""

from __future__ import annotations

import datetime as dt
import math
import time
import urllib.parse
from decimal import Decimal
from typing import Annotated

import asyncpg
import msgspec
from litestar import Controller, MediaType, Request, Response, get, post, route
from litestar.params import Parameter

from libs.runtime.version import fleetwatch_version

from ..authn import ActorDep
from ..state import GatewayDep
from .catalog import METRICS, Window, fetch, load_hosts
from .engine import Evaluator, Scalar, Vector, steps
from .promql import LABEL_NAME, BadData, Selector, parse, parse_duration, parse_selector

# Reads sent as POST and remote-written samples change nothing: not audited (auditing.changes).
NOT_AUDITED = {"audit": False}
MAX_MATCH = 64
# Checked by the handler (bad_data, Prometheus's answer) rather than by a pattern here (Litestar's 400).
LabelParam = Annotated[str, Parameter(max_length=200, description="label name")]
DEFAULT_SPAN = 3600.0  # series/labels without start/end look at the last hour


class Unavailable(Exception):
    pass


def answer(data: object, status: int = 200) -> Response[bytes]:
    return Response(
        msgspec.json.encode({"status": "success", "data": data}), status_code=status, media_type=MediaType.JSON
    )


def error(kind: str, message: str, status: int) -> Response[bytes]:
    body = {"status": "error", "errorType": kind, "error": message}
    return Response(msgspec.json.encode(body), status_code=status, media_type=MediaType.JSON)


def fmt_value(v: float) -> str:
    """As Prometheus writes sample values (Go's FormatFloat(v, 'f', -1, 64))."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    text = format(Decimal(repr(v)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def fmt_time(t: float) -> float | int:
    ms = round(t * 1000)
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def parse_time(text: str, name: str) -> float:
    try:
        v = float(text)
        if math.isfinite(v):
            return v
    except ValueError:
        pass
    try:
        d = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if d.tzinfo is None:
            raise ValueError
        return d.timestamp()
    except ValueError:
        raise BadData(f'invalid parameter "{name}": cannot parse {text!r} to a valid timestamp') from None


def parse_step(text: str) -> float:
    try:
        v = float(text)
        if math.isfinite(v):
            return v
    except ValueError:
        pass
    try:
        return parse_duration(text)
    except BadData:
        raise BadData(f'invalid parameter "step": cannot parse {text!r} to a valid duration') from None


async def params(request: Request) -> dict[str, list[str]]:
    """Query string and (for POST) a form-encoded body, as Prometheus reads both."""
    out: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        out.setdefault(k, []).append(v)
    if request.method == "POST" and "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
        try:
            body = (await request.body()).decode()
        except UnicodeDecodeError:
            raise BadData("the form body is not UTF-8") from None
        for k, v in urllib.parse.parse_qsl(body, keep_blank_values=True):
            out.setdefault(k, []).append(v)
    return out


def one(p: dict[str, list[str]], name: str, default: str | None = None) -> str | None:
    vals = p.get(name)
    return vals[-1] if vals else default


def matches(p: dict[str, list[str]], required: bool) -> list[Selector]:
    raw = p.get("match[]", [])
    if required and not raw:
        raise BadData("no match[] parameter provided")
    if len(raw) > MAX_MATCH:
        raise BadData(f"at most {MAX_MATCH} match[] parameters")
    return [parse_selector(m) for m in raw]


class Context:
    def __init__(self, gw) -> None:
        self.pool = gw.pool
        self.hosts: dict[str, dict[str, str]] | None = None

    async def fetch(self, sel: Selector, w: Window, samples: bool = True):
        if self.hosts is None:
            try:
                self.hosts = await load_hosts(self.pool)
            except asyncpg.UndefinedTableError:
                raise Unavailable("history tables not created yet (ingest has not run)") from None
        try:
            return await fetch(self.pool, self.hosts, sel, w, samples=samples)
        except asyncpg.UndefinedTableError:
            raise Unavailable("history tables not created yet (ingest has not run)") from None


async def run(gw, request: Request, handler) -> Response[bytes]:
    try:
        return await handler(Context(gw), await params(request))
    except BadData as e:
        return error("bad_data", str(e), 400)
    except Unavailable as e:
        return error("unavailable", str(e), 503)


def window_of(p: dict[str, list[str]]) -> tuple[float, float]:
    end = parse_time(one(p, "end") or str(time.time()), "end")
    start = parse_time(one(p, "start") or str(end - DEFAULT_SPAN), "start")
    if end < start:
        raise BadData("end timestamp must not be before start time")
    return start, end


def matrix(result: Vector | Scalar, times: list[float]) -> dict:
    if isinstance(result, Scalar):
        return {
            "resultType": "matrix",
            "result": [
                {
                    "metric": {},
                    "values": [[fmt_time(t), fmt_value(v)] for t, v in zip(times, result.values, strict=True)],
                }
            ],
        }
    out = []
    for labels, vals in sorted(result.series, key=lambda s: sorted(s[0].items())):
        pts = [[fmt_time(t), fmt_value(v)] for t, v in zip(times, vals, strict=True) if v is not None]
        if pts:
            out.append({"metric": labels, "values": pts})
    return {"resultType": "matrix", "result": out}


async def series_matching(ctx: Context, sels: list[Selector], start: float, end: float) -> list[dict[str, str]]:
    seen: dict[tuple, dict[str, str]] = {}
    for sel in sels:
        found, _ = await ctx.fetch(sel, Window(start, end, None), samples=False)
        for labels, _, _ in found:
            seen.setdefault(tuple(sorted(labels.items())), labels)
    return [seen[k] for k in sorted(seen)]


async def _query(ctx: Context, p: dict[str, list[str]]) -> Response[bytes]:
    expr = parse(one(p, "query") or "")
    t = parse_time(one(p, "time") or str(time.time()), "time")
    result = await Evaluator(ctx.fetch, [t], None).evaluate(expr)
    if isinstance(result, Scalar):
        return answer({"resultType": "scalar", "result": [fmt_time(t), fmt_value(result.values[0])]})
    vec = [
        {"metric": labels, "value": [fmt_time(t), fmt_value(vals[0])]}
        for labels, vals in sorted(result.series, key=lambda s: sorted(s[0].items()))
        if vals[0] is not None
    ]
    return answer({"resultType": "vector", "result": vec})


async def _query_range(ctx: Context, p: dict[str, list[str]]) -> Response[bytes]:
    expr = parse(one(p, "query") or "")
    for name in ("start", "end", "step"):
        if one(p, name) is None:
            raise BadData(f'invalid parameter "{name}": missing')
    start, end = parse_time(one(p, "start") or "", "start"), parse_time(one(p, "end") or "", "end")
    step = parse_step(one(p, "step") or "")
    times = steps(start, end, step)
    return answer(matrix(await Evaluator(ctx.fetch, times, step).evaluate(expr), times))


async def _series(ctx: Context, p: dict[str, list[str]]) -> Response[bytes]:
    start, end = window_of(p)
    return answer(await series_matching(ctx, matches(p, True), start, end))


async def _labels(ctx: Context, p: dict[str, list[str]]) -> Response[bytes]:
    start, end = window_of(p)
    sels = matches(p, False)
    if not sels:
        sels = [parse_selector('{__name__=~".+"}')]
    names = {k for labels in await series_matching(ctx, sels, start, end) for k in labels}
    return answer(sorted(names))


async def _label_values(ctx: Context, p: dict[str, list[str]], name: str) -> Response[bytes]:
    if not LABEL_NAME.match(name):
        raise BadData(f"invalid label name: {name!r}")
    start, end = window_of(p)
    sels = matches(p, False)
    if not sels and name == "__name__":
        remote = await ctx.pool.fetch("SELECT DISTINCT name FROM prom_series")
        return answer(sorted(set(METRICS) | {r["name"] for r in remote}))
    if not sels:
        sels = [parse_selector('{__name__=~".+"}')]
    values = {labels[name] for labels in await series_matching(ctx, sels, start, end) if name in labels}
    return answer(sorted(values))


def federate_text(series: list[tuple[dict[str, str], float, float]]) -> str:
    lines: list[str] = []
    last_name = None
    for labels, t, v in sorted(series, key=lambda s: (s[0]["__name__"], sorted(s[0].items()))):
        name = labels["__name__"]
        if name != last_name:
            m = METRICS.get(name)
            lines.append(f"# TYPE {name} {m.kind if m else 'untyped'}")
            last_name = name
        inner = ",".join(f'{k}="{_escape(val)}"' for k, val in sorted(labels.items()) if k != "__name__")
        lines.append(f"{name}{{{inner}}} {fmt_value(v)} {round(t * 1000)}")
    return "\n".join(lines) + "\n"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class PrometheusController(Controller):
    path = "/prometheus"
    tags = ["prometheus"]
    # Not in the gateway's OpenAPI document: these routes answer in Prometheus's own envelope,
    # documented by Prometheus and by docs/prometheus.md (what a client may send, the subset).
    include_in_schema = False

    @route(
        "/api/v1/query",
        http_method=["GET", "POST"],
        opt=NOT_AUDITED,
        summary="PromQL instant query (subset, docs/prometheus.md)",
    )
    async def query(self, request: Request, gw: GatewayDep) -> Response[bytes]:
        return await run(gw, request, _query)

    @route("/api/v1/query_range", http_method=["GET", "POST"], opt=NOT_AUDITED, summary="PromQL range query (subset)")
    async def query_range(self, request: Request, gw: GatewayDep) -> Response[bytes]:
        return await run(gw, request, _query_range)

    @route("/api/v1/series", http_method=["GET", "POST"], opt=NOT_AUDITED, summary="Series matching match[]")
    async def series(self, request: Request, gw: GatewayDep) -> Response[bytes]:
        return await run(gw, request, _series)

    @route("/api/v1/labels", http_method=["GET", "POST"], opt=NOT_AUDITED, summary="Label names")
    async def labels(self, request: Request, gw: GatewayDep) -> Response[bytes]:
        return await run(gw, request, _labels)

    @get("/api/v1/label/{name:str}/values", summary="One label's values")
    async def label_values(self, request: Request, gw: GatewayDep, name: LabelParam) -> Response[bytes]:
        return await run(gw, request, lambda ctx, p: _label_values(ctx, p, name))

    @get("/api/v1/metadata", summary="Type, help and unit of every fleetwatch_* series")
    async def metadata(self) -> Response[bytes]:
        return answer({m.name: [{"type": m.kind, "help": m.help, "unit": m.unit}] for m in METRICS.values()})

    @get("/api/v1/status/buildinfo", summary="The Prometheus API version this speaks")
    async def buildinfo(self) -> Response[bytes]:
        # Grafana reads `version` to decide which API features to use: this speaks 2.42's.
        return answer(
            {"version": "2.42.0", "revision": "fleetwatch-" + fleetwatch_version(), "branch": "", "buildUser": "",
             "buildDate": "", "goVersion": "", "application": "fleetwatch"}
        )  # fmt: skip

    @post(
        "/api/v1/write",
        opt=NOT_AUDITED,
        summary="Remote-write 1.0 receiver (snappy protobuf); hosts per token",
        status_code=204,
    )
    async def write(self, request: Request, gw: GatewayDep, actor: ActorDep) -> None:
        body = await request.body()
        await gw.remote.receive(body, request.headers.get("content-encoding", ""), actor)

    @get("/federate", summary="Latest value of every series matching match[], Prometheus text format")
    async def federate(self, request: Request, gw: GatewayDep) -> Response:
        async def handler(ctx: Context, p: dict[str, list[str]]) -> Response:
            now = time.time()
            latest: dict[tuple, tuple[dict[str, str], float, float]] = {}
            for sel in matches(p, True):
                found, _ = await ctx.fetch(sel, Window(now - 300.0, now, None))
                for labels, ts, vs in found:
                    if ts:
                        latest[tuple(sorted(labels.items()))] = (labels, ts[-1], vs[-1])
            return Response(
                federate_text(list(latest.values())).encode(), media_type="text/plain; version=0.0.4; charset=utf-8"
            )

        return await run(gw, request, handler)
