"""The PromQL subset fleetwatch answers, parsed by hand (recursive descent) into a small AST.

Supported: instant and range vector selectors with = != =~ !~; rate, irate, increase; the
*_over_time family; sum/avg/min/max/count/topk/bottomk with by|without; arithmetic and
comparison (optionally `bool`) between vectors and scalars; number literals, parentheses,
unary minus. Anything else (offset, @, subqueries, vector-to-vector matching, other functions)
is refused with BadData naming what is missing: an unsupported query never gets a wrong answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_QUERY = 10_000


class BadData(ValueError):
    """The query (or a parameter) cannot be answered: Prometheus's `bad_data`, HTTP 400."""


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # = != =~ !~
    value: str
    regex: re.Pattern | None = field(default=None, compare=False)

    def matches(self, v: str) -> bool:
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        assert self.regex is not None
        hit = self.regex.fullmatch(v) is not None
        return hit if self.op == "=~" else not hit


@dataclass(frozen=True)
class Selector:
    matchers: tuple[Matcher, ...]
    range_s: float | None = None  # set for a range vector `x[5m]`


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class Call:
    func: str
    arg: Selector  # every supported function takes one range vector


@dataclass(frozen=True)
class Aggregate:
    op: str
    expr: object
    grouping: tuple[str, ...] = ()
    without: bool = False
    param: object | None = None  # k of topk / bottomk


@dataclass(frozen=True)
class Binary:
    op: str
    lhs: object
    rhs: object
    bool_: bool = False


@dataclass(frozen=True)
class Neg:
    expr: object


RANGE_FUNCS = frozenset(
    {
        "rate",
        "irate",
        "increase",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "last_over_time",
        "present_over_time",
        "stddev_over_time",
        "stdvar_over_time",
    }
)
AGGREGATORS = frozenset({"sum", "avg", "min", "max", "count", "topk", "bottomk"})
UNSUPPORTED_AGG = frozenset({"stddev", "stdvar", "quantile", "count_values", "group", "limitk"})
COMPARISONS = frozenset({"==", "!=", ">", "<", ">=", "<="})
KEYWORDS = frozenset({"by", "without", "bool", "offset", "on", "ignoring", "group_left", "group_right"})
SET_OPS = frozenset({"and", "or", "unless"})

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<dur>(?:[0-9]+(?:ms|s|m|h|d|w|y))+(?![A-Za-z0-9_]))
  | (?P<num>0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?(?![A-Za-z0-9_.]))
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<op>=~|!~|==|!=|>=|<=|[-+*/%^<>=(){}\[\],@:])
    """,
    re.X,
)
_DUR_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_duration(text: str) -> float:
    if not text or _DUR_PART.sub("", text):
        raise BadData(f"not a duration: {text!r}")
    secs = sum(int(n) * _UNIT[u] for n, u in _DUR_PART.findall(text))
    if secs <= 0:
        raise BadData(f"duration must be positive: {text!r}")
    return secs


def _unquote(tok: str) -> str:
    if tok[0] == "`":
        return tok[1:-1]
    out, body, i = [], tok[1:-1], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt in "xuU":
                width = {"x": 2, "u": 4, "U": 8}[nxt]
                try:
                    out.append(chr(int(body[i + 2 : i + 2 + width], 16)))
                except ValueError:
                    raise BadData(f"bad escape in string {tok!r}") from None
                i += 2 + width
                continue
            raise BadData(f"unknown escape \\{nxt} in string {tok!r}")
        out.append(c)
        i += 1
    return "".join(out)


def tokenize(text: str) -> list[tuple[str, str, int]]:
    toks: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise BadData(f"unexpected character {text[pos]!r} at position {pos}")
        kind = m.lastgroup or ""
        if kind != "ws":
            toks.append((kind, m.group(), pos))
        pos = m.end()
    toks.append(("eof", "", pos))
    return toks


def number(text: str) -> float:
    low = text.lower()
    if low in ("inf", "+inf"):
        return float("inf")
    if low == "nan":
        return float("nan")
    return float(int(text, 16)) if low.startswith("0x") else float(text)


class Parser:
    def __init__(self, text: str) -> None:
        if len(text) > MAX_QUERY:
            raise BadData(f"query longer than {MAX_QUERY} characters")
        if not text.strip():
            raise BadData("empty query")
        self.toks = tokenize(text)
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, str, int]:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def take(self) -> tuple[str, str, int]:
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, value: str) -> None:
        kind, v, pos = self.take()
        if v != value or kind in ("str", "eof") and value:
            raise BadData(f"expected {value!r} at position {pos}, found {v or 'end of query'!r}")

    def parse(self) -> object:
        node = self.comparison()
        kind, v, pos = self.peek()
        if kind != "eof":
            raise BadData(f"unexpected {v!r} at position {pos}")
        return node

    # Lowest to highest precedence: comparisons, + -, * / %, ^ (right associative), unary.
    def comparison(self) -> object:
        lhs = self.additive()
        while self.peek()[1] in COMPARISONS or self.peek()[1] in SET_OPS:
            op = self.take()[1]
            if op in SET_OPS:
                raise BadData(f"set operator {op!r} is not supported")
            bool_ = False
            if self.peek() == ("ident", "bool", self.peek()[2]):
                self.take()
                bool_ = True
            self.no_matching()
            lhs = Binary(op, lhs, self.additive(), bool_)
        return lhs

    def additive(self) -> object:
        lhs = self.multiplicative()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            self.no_matching()
            lhs = Binary(op, lhs, self.multiplicative())
        return lhs

    def multiplicative(self) -> object:
        lhs = self.unary()
        while self.peek()[1] in ("*", "/", "%") or self.peek()[1] == "atan2":
            op = self.take()[1]
            if op == "atan2":
                raise BadData("atan2 is not supported")
            self.no_matching()
            lhs = Binary(op, lhs, self.unary())
        return lhs

    def unary(self) -> object:
        if self.peek()[1] in ("-", "+"):
            op = self.take()[1]
            inner = self.unary()
            if op == "+":
                return inner
            return Number(-inner.value) if isinstance(inner, Number) else Neg(inner)
        return self.power()

    def power(self) -> object:
        base = self.postfix()
        if self.peek()[1] == "^":
            self.take()
            self.no_matching()
            return Binary("^", base, self.unary())  # right associative, binds tighter than unary minus
        return base

    def no_matching(self) -> None:
        kind, v, _ = self.peek()
        if kind == "ident" and v in ("on", "ignoring", "group_left", "group_right"):
            raise BadData(f"vector matching ({v}) is not supported")

    def postfix(self) -> object:
        node = self.primary()
        kind, v, pos = self.peek()
        if v == "[":
            if not isinstance(node, Selector) or node.range_s is not None:
                raise BadData(f"subqueries are not supported (position {pos})")
            node = Selector(node.matchers, self.range())
        kind, v, pos = self.peek()
        if (kind == "ident" and v == "offset") or v == "@":
            raise BadData(f"the {v!r} modifier is not supported")
        return node

    def range(self) -> float:
        self.expect("[")
        kind, v, pos = self.take()
        if kind not in ("dur", "num") or self.peek()[1] != "]":
            raise BadData(f"subqueries and odd ranges are not supported (position {pos})")
        self.take()
        return parse_duration(v if kind == "dur" else v + "s")

    def primary(self) -> object:
        kind, v, pos = self.peek()
        if kind == "num":
            self.take()
            return Number(number(v))
        if kind == "dur":
            raise BadData(f"unexpected duration {v!r} at position {pos}")
        if v == "(":
            self.take()
            inner = self.comparison()
            self.expect(")")
            return inner
        if v == "{":
            return Selector(self.matchers(None))
        if kind == "ident":
            low = v.lower()
            if low in ("inf", "nan") and self.peek(1)[1] != "{":
                self.take()
                return Number(number(v))
            if v in AGGREGATORS:
                return self.aggregate()
            if v in UNSUPPORTED_AGG and self.peek(1)[1] in ("(", "by", "without"):
                raise BadData(f"aggregation {v!r} is not supported")
            if self.peek(1)[1] == "(":
                return self.call()
            if v in KEYWORDS:
                raise BadData(f"unexpected keyword {v!r} at position {pos}")
            self.take()
            return Selector(self.matchers(v) if self.peek()[1] == "{" else (Matcher("__name__", "=", v),))
        raise BadData(f"unexpected {v or 'end of query'!r} at position {pos}")

    def call(self) -> Call:
        name = self.take()[1]
        if name not in RANGE_FUNCS:
            raise BadData(f"function {name!r} is not supported")
        self.expect("(")
        arg = self.comparison()
        self.expect(")")
        if not isinstance(arg, Selector) or arg.range_s is None:
            raise BadData(f"{name} expects a range vector selector such as metric[5m]")
        return Call(name, arg)

    def grouping(self) -> tuple[tuple[str, ...], bool]:
        without = self.take()[1] == "without"
        self.expect("(")
        names: list[str] = []
        while self.peek()[1] != ")":
            kind, v, pos = self.take()
            if kind != "ident" or not LABEL_NAME.match(v):
                raise BadData(f"expected a label name at position {pos}")
            names.append(v)
            if self.peek()[1] == ",":
                self.take()
        self.expect(")")
        return tuple(names), without

    def aggregate(self) -> Aggregate:
        op = self.take()[1]
        grouping: tuple[str, ...] = ()
        without = False
        grouped = False
        if self.peek()[1] in ("by", "without"):
            grouping, without = self.grouping()
            grouped = True
        self.expect("(")
        param = None
        if op in ("topk", "bottomk"):
            param = self.comparison()
            self.expect(",")
        expr = self.comparison()
        self.expect(")")
        if self.peek()[1] in ("by", "without"):
            if grouped:
                raise BadData("grouping given twice")
            grouping, without = self.grouping()
        return Aggregate(op, expr, grouping, without, param)

    def matchers(self, name: str | None) -> tuple[Matcher, ...]:
        out = [Matcher("__name__", "=", name)] if name else []
        self.expect("{")
        while self.peek()[1] != "}":
            kind, label, pos = self.take()
            if kind != "ident" or not LABEL_NAME.match(label):
                raise BadData(f"expected a label name at position {pos}")
            kind, op, pos = self.take()
            if op not in ("=", "!=", "=~", "!~"):
                raise BadData(f"expected a label matcher operator at position {pos}")
            kind, raw, pos = self.take()
            if kind != "str":
                raise BadData(f"expected a quoted string at position {pos}")
            out.append(matcher(label, op, _unquote(raw)))
            if self.peek()[1] == ",":
                self.take()
            elif self.peek()[1] != "}":
                raise BadData(f"expected ',' or '}}' at position {self.peek()[2]}")
        self.expect("}")
        if not any(not m.matches("") for m in out):
            raise BadData("vector selector must contain at least one non-empty matcher")
        return tuple(out)


def matcher(label: str, op: str, value: str) -> Matcher:
    rx = None
    if op in ("=~", "!~"):
        try:
            rx = re.compile(value, re.S)
        except re.error as e:
            raise BadData(f"invalid regular expression {value!r}: {e}") from None
    return Matcher(label, op, value, rx)


def parse(text: str) -> object:
    return Parser(text).parse()


def parse_selector(text: str) -> Selector:
    """A `match[]` argument: a bare instant vector selector."""
    node = parse(text)
    if not isinstance(node, Selector) or node.range_s is not None:
        raise BadData(f"match[] must be an instant vector selector: {text!r}")
    return node
