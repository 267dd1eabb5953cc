"""`hosts` (the fleet at a glance) and `hosts HOST` (one host's info and latest values)."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from rich.text import Text

from . import output
from .client import Client, CliError
from .common import add_common, client, command, ident, want_json


def alert_items(body: Any) -> list[dict]:
    """The alert list whether the API wraps it (`{"alerts": [...]}` / `{"items": [...]}`) or not."""
    if isinstance(body, dict):
        body = body.get("alerts", body.get("items", []))
    return [a for a in body or [] if isinstance(a, dict)]


def firing_by_host(c: Client) -> Counter | None:
    """Firing alerts per host, or None where this gateway has no alert route (or no alerter)."""
    try:
        items = alert_items(c.get("/api/v1/alerts"))
    except CliError as exc:
        if exc.status in (404, 405, 502, 503, 504):
            return None
        raise
    return Counter(a.get("host", "") for a in items if a.get("state", "firing") == "firing")


def gpu_text(last: dict) -> str:
    g = last.get("gpu_util_percent")
    return "-" if g is None else output.pct(g)


@command
def hosts(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.host:
            return detail(c, args)
        params = {"status": args.status, "label": args.label}
        body = c.get("/api/v1/hosts", params=params)
        if want_json(args):
            output.print_json(body)
            return 0
        alerts = firing_by_host(c)
    rows = []
    for h in body:
        last = h.get("last") or {}
        mem = output.pct(last.get("mem_percent"))
        if last.get("mem_total"):
            mem += f"/{output.size(last['mem_total'])}"
        n = alerts.get(h["host"], 0) if alerts is not None else None
        rows.append(
            (
                h["host"],
                output.state(h["status"]),
                output.pct(last.get("cpu_percent")),
                mem,
                output.pct(last.get("disk_max_percent")),
                gpu_text(last),
                "-" if n is None else Text(str(n), style="red" if n else ""),
                output.ago(h.get("last_seen")),
            )
        )
    output.show(
        output.table(
            ("HOST", "STATUS", "CPU", "RAM", "DISK", "GPU", "ALERTS", "SEEN"),
            rows,
            right=("CPU", "DISK", "GPU", "ALERTS"),
        )
    )
    online = sum(1 for h in body if h["status"] == "online")
    output.console().print(f"{len(body)} hosts, {online} online", style="dim")
    return 0


def detail(c: Client, args: argparse.Namespace) -> int:
    d = c.get(f"/api/v1/hosts/{args.host}")
    if want_json(args):
        output.print_json(d)
        return 0
    h, f = d["host"], d.get("frame")
    lines = [
        ("host", h["host"]),
        ("status", output.state(h["status"])),
        ("last seen", output.ago(h.get("last_seen"))),
        ("hostname", h.get("hostname")),
        ("os", h.get("os")),
        ("kernel", h.get("kernel")),
        ("arch", h.get("arch")),
        ("cpu", f"{h.get('cpu_model') or '-'} x{h.get('cpu_count') or '?'}"),
        ("memory", output.size(h.get("mem_total"))),
        ("agent", h.get("agent_version") or "-"),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted((h.get("labels") or {}).items())) or "-"),
    ]
    if f:
        lines += [
            (
                "cpu now",
                f"{output.pct(f['cpu']['percent'])}  load {f['cpu'].get('load1', 0):.2f} {f['cpu'].get('load5', 0):.2f} {f['cpu'].get('load15', 0):.2f}",
            ),
            (
                "mem now",
                f"{output.pct(f['mem']['percent'])}  {output.size(f['mem']['used'])} / {output.size(f['mem']['total'])}",
            ),
            ("uptime", output.duration(f.get("uptime"))),
        ]
        for dsk in f.get("disks", []):
            lines.append(
                (
                    f"disk {dsk['mount']}",
                    f"{output.pct(dsk['percent'])}  {output.size(dsk['used'])} / {output.size(dsk['total'])}",
                )
            )
        for g in f.get("gpus", []):
            lines.append(
                (
                    f"gpu {g['index']}",
                    f"{g.get('name', '')}  {output.pct(g.get('util_percent'))}  {output.size(g.get('mem_used'))} / {output.size(g.get('mem_total'))}",
                )
            )
    output.show(output.table(("FIELD", "VALUE"), lines))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hosts", help="the fleet: host, online, CPU, RAM, disk, GPU, alerts (or one host in detail)")
    p.add_argument("host", nargs="?", metavar="HOST", type=ident, help="show this host in detail")
    p.add_argument("--status", choices=("online", "offline"), help="only hosts in this state")
    p.add_argument("--label", help="only hosts with this label (key=value)")
    add_common(p)
    p.set_defaults(func=hosts)
