"""Metric fields a rule can name, compiled once into fast extractors over a MetricFrame.

`cpu.percent`, `mem.percent`, `swap.percent`, `cpu.load1`, `procs.zombie`, `net.bytes_recv`,
`disk_io.write_bps`, `uptime` give one value per frame; `disk.<x>` gives one per mount,
`gpu.<x>` one per GPU and `iface.<x>` one per network interface, each labelled.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from libs.schemas.metrics import (
    CpuStats,
    DiskIO,
    DiskUsage,
    GpuStats,
    MemStats,
    MetricFrame,
    NetIface,
    NetRates,
    ProcCounts,
    SwapStats,
)

Labels = tuple[tuple[str, str], ...]
Extractor = Callable[[MetricFrame], list[tuple[Labels, float]]]

_SCALAR_PARTS: dict[str, type] = {
    "cpu": CpuStats,
    "mem": MemStats,
    "swap": SwapStats,
    "disk_io": DiskIO,
    "net": NetRates,
    "procs": ProcCounts,
}
# list attribute of the frame, its element type, the label naming an element, and its value
_LIST_PARTS: dict[str, tuple[str, type, str, Callable]] = {
    "disk": ("disks", DiskUsage, "mount", lambda d: d.mount),
    "gpu": ("gpus", GpuStats, "gpu", lambda g: str(g.index)),
    "iface": ("net_ifaces", NetIface, "iface", lambda n: n.name),
}
_NUMERIC = (int, float)


class UnknownField(ValueError):
    pass


def _numeric_fields(t: type) -> set[str]:
    import typing

    hints = typing.get_type_hints(t)
    out = set()
    for f in msgspec.structs.fields(t):
        tp = hints[f.name]
        args = set(typing.get_args(tp)) or {tp}
        if args & {int, float} and f.name not in ("index", "pid"):
            out.add(f.name)
    return out


def known_fields() -> list[str]:
    out = ["uptime"]
    for part, t in _SCALAR_PARTS.items():
        out += [f"{part}.{f}" for f in sorted(_numeric_fields(t))]
    for part, (_, t, _, _) in _LIST_PARTS.items():
        out += [f"{part}.{f}" for f in sorted(_numeric_fields(t))]
    return out


def normalize(field: str) -> str:
    """`cpu_percent` (the history API's and charts' spelling) as `cpu.percent`; others unchanged."""
    if "." in field or field == "uptime":
        return field
    for part in sorted([*_SCALAR_PARTS, *_LIST_PARTS], key=len, reverse=True):  # disk_io before disk
        if field.startswith(part + "_"):
            return f"{part}.{field[len(part) + 1 :]}"
    return field


def compile_field(field: str) -> Extractor:
    """An extractor for `field` (either spelling), or UnknownField naming the fields that exist."""
    field = normalize(field)
    if field == "uptime":
        return lambda fr: [((), fr.uptime)]
    part, _, name = field.partition(".")
    if part in _SCALAR_PARTS and name in _numeric_fields(_SCALAR_PARTS[part]):

        def scalar(fr: MetricFrame, _p=part, _n=name) -> list[tuple[Labels, float]]:
            v = getattr(getattr(fr, _p), _n)
            return [] if v is None else [((), v)]

        return scalar
    if part in _LIST_PARTS and name in _numeric_fields(_LIST_PARTS[part][1]):
        attr, _, label, key = _LIST_PARTS[part]

        def per_item(fr: MetricFrame, _a=attr, _n=name, _l=label, _k=key) -> list[tuple[Labels, float]]:
            out: list[tuple[Labels, float]] = []
            for item in getattr(fr, _a):
                v = getattr(item, _n)
                if v is not None:
                    out.append((((_l, _k(item)),), v))
            return out

        return per_item
    raise UnknownField(f"unknown metric field {field!r}; known: {', '.join(known_fields())}")
