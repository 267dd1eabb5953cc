"""Evaluating the parsed subset at a list of instants, with Prometheus 2.x semantics: an instant
selector takes the latest sample within the lookback window [t - lookback, t], a range
selector every sample in [t - range, t]; rate/increase extrapolate as Prometheus does."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .catalog import METRICS, Series, Window, tier
from .promql import COMPARISONS, Aggregate, BadData, Binary, Call, Neg, Number, Selector

LOOKBACK = 300.0
MAX_POINTS = 11_000  # per series, as Prometheus refuses more
MAX_TOTAL = 5_000_000  # samples one query may produce or read

Fetch = Callable[[Selector, Window], Awaitable[tuple[list[Series], float]]]


@dataclass
class Vector:
    series: list[tuple[dict[str, str], list[float | None]]]


@dataclass
class Scalar:
    values: list[float]


def _drop_name(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k != "__name__"}


def _arith(op: str, a: float, b: float) -> float:
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if b == 0:
                return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1, b)
            return a / b
        if op == "%":
            return math.fmod(a, b) if b != 0 else math.nan
        if op == "^":
            return math.pow(a, b)
    except OverflowError:
        return math.inf
    except ValueError:
        return math.nan
    raise BadData(f"operator {op!r} is not supported")


def _compare(op: str, a: float, b: float) -> bool:
    return {"==": a == b, "!=": a != b, ">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]


def _over_time(func: str, vs: list[float]) -> float:
    n = len(vs)
    if func == "count_over_time":
        return float(n)
    if func == "present_over_time":
        return 1.0
    if func == "last_over_time":
        return vs[-1]
    if func == "sum_over_time":
        return math.fsum(vs)
    if func == "avg_over_time":
        return math.fsum(vs) / n
    if func == "min_over_time":
        return min(vs)
    if func == "max_over_time":
        return max(vs)
    mean = math.fsum(vs) / n
    var = math.fsum((v - mean) ** 2 for v in vs) / n
    return var if func == "stdvar_over_time" else math.sqrt(var)


def _extrapolated(func: str, ts: list[float], vs: list[float], t: float, rng: float) -> float | None:
    """Prometheus's extrapolatedRate (2.x) for rate and increase; irate from the last two."""
    if len(vs) < 2:
        return None
    if func == "irate":
        dt = ts[-1] - ts[-2]
        if dt <= 0:
            return None
        d = vs[-1] if vs[-1] < vs[-2] else vs[-1] - vs[-2]
        return d / dt
    result = vs[-1] - vs[0]
    last = vs[0]
    for v in vs:
        if v < last:
            result += last  # a counter reset: what was counted before it still counts
        last = v
    to_start, to_end = ts[0] - (t - rng), t - ts[-1]
    sampled = ts[-1] - ts[0]
    avg_gap = sampled / (len(vs) - 1)
    if result > 0 and vs[0] >= 0:
        to_start = min(to_start, sampled * (vs[0] / result))
    threshold = avg_gap * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else avg_gap / 2
    interval += to_end if to_end < threshold else avg_gap / 2
    result *= interval / sampled
    return result / rng if func == "rate" else result


class Evaluator:
    def __init__(self, fetch: Fetch, times: list[float], step: float | None) -> None:
        self.fetch = fetch
        self.times = times
        self.step = step
        self.read = 0

    def window(self, back: float) -> Window:
        return Window(self.times[0] - back, self.times[-1], self.step)

    async def evaluate(self, node: object) -> Vector | Scalar:
        if isinstance(node, Number):
            return Scalar([node.value] * len(self.times))
        if isinstance(node, Selector):
            if node.range_s is not None:
                raise BadData("a range vector cannot be the result of an expression; wrap it in a function")
            return await self.instant(node)
        if isinstance(node, Call):
            return await self.call(node)
        if isinstance(node, Aggregate):
            return await self.aggregate(node)
        if isinstance(node, Neg):
            v = await self.evaluate(node.expr)
            if isinstance(v, Scalar):
                return Scalar([-x for x in v.values])
            return Vector([(_drop_name(lab), [None if x is None else -x for x in xs]) for lab, xs in v.series])
        if isinstance(node, Binary):
            return await self.binary(node)
        raise BadData(f"unsupported expression {type(node).__name__}")

    async def load(self, sel: Selector, back: float) -> tuple[list[Series], float]:
        series, res = await self.fetch(sel, self.window(back))
        self.read += sum(len(s[1]) for s in series)
        if self.read > MAX_TOTAL or len(series) * len(self.times) > MAX_TOTAL:
            raise BadData("query reads too many samples: narrow the selector or raise the step")
        return series, res

    async def instant(self, sel: Selector) -> Vector:
        # The lookback is widened on rollup tiers so a step between two buckets still finds one.
        back = max(LOOKBACK, 2 * tier(self.window(LOOKBACK))[1])
        series, _ = await self.load(sel, back)
        out = []
        for labels, ts, vs in series:
            vals: list[float | None] = []
            j = 0
            for t in self.times:
                j = bisect_right(ts, t, j)
                vals.append(vs[j - 1] if j and ts[j - 1] >= t - back else None)
            out.append((labels, vals))
        return Vector(out)

    async def call(self, node: Call) -> Vector:
        sel, rng = node.arg, node.arg.range_s or 0.0
        if node.func in ("rate", "irate", "increase"):
            gauges = [
                n
                for m in sel.matchers
                if m.name == "__name__" and m.op == "="
                for n in [m.value]
                if n in METRICS and METRICS[n].kind != "counter"
            ]
            if gauges:
                raise BadData(f"{node.func} needs a counter; {gauges[0]} is a gauge (use avg_over_time or deriv)")
        series, _ = await self.load(sel, rng)
        out = []
        for labels, ts, vs in series:
            if node.func in ("rate", "irate", "increase") and labels["__name__"] in METRICS:
                if METRICS[labels["__name__"]].kind != "counter":
                    continue  # a gauge matched by a regex: rate of it means nothing
            vals: list[float | None] = []
            for t in self.times:
                lo, hi = bisect_left(ts, t - rng), bisect_right(ts, t)
                if lo >= hi:
                    vals.append(None)
                elif node.func in ("rate", "irate", "increase"):
                    vals.append(_extrapolated(node.func, ts[lo:hi], vs[lo:hi], t, rng))
                else:
                    vals.append(_over_time(node.func, vs[lo:hi]))
            out.append((_drop_name(labels), vals))
        return Vector(out)

    async def aggregate(self, node: Aggregate) -> Vector:
        inner = await self.evaluate(node.expr)
        if not isinstance(inner, Vector):
            raise BadData(f"{node.op} expects an instant vector")

        def key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
            if node.without:
                drop = {*node.grouping, "__name__"}
                return tuple(sorted((k, v) for k, v in labels.items() if k not in drop))
            return tuple(sorted((k, labels[k]) for k in node.grouping if k in labels))

        groups: dict[tuple, list[int]] = {}
        for i, (labels, _) in enumerate(inner.series):
            groups.setdefault(key(labels), []).append(i)
        n = len(self.times)
        if node.op in ("topk", "bottomk"):
            k_vals = await self.evaluate(node.param)
            if not isinstance(k_vals, Scalar):
                raise BadData(f"{node.op}'s first argument must be a scalar")
            keep: list[list[float | None]] = [[None] * n for _ in inner.series]
            for members in groups.values():
                for s in range(n):
                    k = int(k_vals.values[s])
                    live = [(x, i) for i in members if (x := inner.series[i][1][s]) is not None]
                    live.sort(key=lambda p: -math.inf if math.isnan(p[0]) else p[0], reverse=node.op == "topk")
                    for v, i in live[: max(k, 0)]:
                        keep[i][s] = v
            return Vector([(labels, keep[i]) for i, (labels, _) in enumerate(inner.series)])
        out = []
        for gkey, members in groups.items():
            vals: list[float | None] = []
            for s in range(n):
                xs = [x for i in members if (x := inner.series[i][1][s]) is not None]
                if not xs:
                    vals.append(None)
                elif node.op == "sum":
                    vals.append(math.fsum(xs))
                elif node.op == "avg":
                    vals.append(math.fsum(xs) / len(xs))
                elif node.op == "count":
                    vals.append(float(len(xs)))
                elif node.op == "min":
                    vals.append(min(xs))
                else:
                    vals.append(max(xs))
            out.append((dict(gkey), vals))
        return Vector(out)

    async def binary(self, node: Binary) -> Vector | Scalar:
        lhs, rhs = await self.evaluate(node.lhs), await self.evaluate(node.rhs)
        cmp = node.op in COMPARISONS
        if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
            if cmp and not node.bool_:
                raise BadData("comparisons between scalars must use the bool modifier")
            if cmp:
                return Scalar([float(_compare(node.op, a, b)) for a, b in zip(lhs.values, rhs.values, strict=True)])
            return Scalar([_arith(node.op, a, b) for a, b in zip(lhs.values, rhs.values, strict=True)])
        if isinstance(lhs, Vector) and isinstance(rhs, Vector):
            raise BadData("binary operations between two vectors are not supported (only vector and scalar)")
        swap = isinstance(lhs, Scalar)
        vec: Vector = rhs if swap else lhs  # type: ignore[assignment]
        sc: Scalar = lhs if swap else rhs  # type: ignore[assignment]
        out = []
        for labels, xs in vec.series:
            vals: list[float | None] = []
            for x, c in zip(xs, sc.values, strict=True):
                if x is None:
                    vals.append(None)
                    continue
                a, b = (c, x) if swap else (x, c)
                if not cmp:
                    vals.append(_arith(node.op, a, b))
                elif node.bool_:
                    vals.append(float(_compare(node.op, a, b)))
                else:
                    vals.append(x if _compare(node.op, a, b) else None)
            out.append((_drop_name(labels) if not cmp or node.bool_ else labels, vals))
        return Vector(out)


def steps(start: float, end: float, step: float) -> list[float]:
    if step <= 0:
        raise BadData("zero or negative query resolution step widths are not accepted. Try a positive integer")
    if end < start:
        raise BadData("end timestamp must not be before start time")
    n = int(math.floor((end - start) / step + 1e-9)) + 1
    if n > MAX_POINTS:
        raise BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
        )
    return [start + i * step for i in range(n)]
