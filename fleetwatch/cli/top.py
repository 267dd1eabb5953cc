"""`top HOST`: one host live, like top/htop — its frame values and process table, redrawn from
the gateway's event stream as frames and process snapshots arrive (and every second, so a host
gone quiet shows its frame ageing). `q` or Ctrl-C quits; `c`/`P` sort by CPU, `m`/`M` by memory,
`p` by pid, `n` by name, `t` by threads.

In a terminal the screen is redrawn in place; piped, each update is printed after the last;
with --json each event is one JSON line. `--iterations N` stops after N live frames (`top -n`),
`--once` prints the latest known state without waiting."""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import select
import sys
import threading
import time
from typing import Any

from rich.console import Group
from rich.text import Text

from . import output
from .client import CliError
from .common import add_common, client, command, ident, want_json

SORTS = {
    "cpu": ("cpu_percent", True),
    "mem": ("rss", True),
    "rss": ("rss", True),
    "pid": ("pid", False),
    "name": ("name", False),
    "threads": ("threads", True),
}


def summary_of_frame(f: dict) -> dict:
    """The figures the stream's frame events carry, from a full MetricFrame (the REST answer)."""
    disks = [d["percent"] for d in f.get("disks", [])]
    gpus = [g["util_percent"] for g in f.get("gpus", []) if g.get("util_percent") is not None]
    return {
        "host": f["host"],
        "ts": f["ts"],
        "seq": f.get("seq"),
        "cpu_percent": f["cpu"]["percent"],
        "load1": f["cpu"].get("load1"),
        "mem_percent": f["mem"]["percent"],
        "mem_used": f["mem"]["used"],
        "mem_total": f["mem"]["total"],
        "swap_percent": (f.get("swap") or {}).get("percent"),
        "disk_max_percent": max(disks) if disks else None,
        "net_bytes_recv": (f.get("net") or {}).get("bytes_recv"),
        "net_bytes_sent": (f.get("net") or {}).get("bytes_sent"),
        "gpu_util_percent": sum(gpus) / len(gpus) if gpus else None,
        "procs_total": (f.get("procs") or {}).get("total"),
        "uptime": f.get("uptime"),
    }


class TopState:
    def __init__(self, host: str, view: dict | None, frame: dict | None, procs: dict | None) -> None:
        self.host = host
        self.view = view or {}
        self.last = summary_of_frame(frame) if frame else (self.view.get("last") or None)
        self.procs = procs or {}
        self.notes: list[str] = []
        self.frames = 0

    def apply(self, kind: str, ev: dict) -> bool:
        data = ev.get("data") or {}
        if kind == "frame":
            self.last = data
            self.frames += 1
            return True
        if kind == "procs":
            self.procs = data
            return True
        if kind == "app":
            self.note(f"app {data.get('name', '?')}: {data.get('previous', '?')} -> {data.get('state', '?')}")
            return True
        if kind == "alert":
            self.note(f"alert {data.get('rule', '?')}: {data.get('state', '?')} {data.get('summary', '')}".rstrip())
            return True
        if kind == "host":
            self.view = {
                **self.view,
                **{k: data.get(k) for k in ("hostname", "os", "kernel", "cpu_model", "cpu_count")},
            }
            return True
        return False

    def note(self, text: str) -> None:
        self.notes = (self.notes + [f"{time.strftime('%H:%M:%S')} {text}"])[-3:]

    def render(self, sort: str, rows: int, now: float | None = None) -> Group:
        now = now or time.time()
        s = self.last or {}
        age = now - s["ts"] if s.get("ts") else None
        head = Text()
        head.append(f"{self.host}", style="bold")
        head.append(
            f"  {self.view.get('hostname') or ''}  up {output.duration(s.get('uptime'))}  load {s.get('load1') or 0:.2f}  procs {s.get('procs_total') or '-'}"
        )
        head.append(f"  frame {output.ago(s.get('ts'), now)}", style="red" if age is None or age > 30 else "dim")
        figures = Text(
            f"CPU {output.pct(s.get('cpu_percent')):>6}   MEM {output.pct(s.get('mem_percent')):>6} "
            f"({output.size(s.get('mem_used'))}/{output.size(s.get('mem_total'))})   SWAP {output.pct(s.get('swap_percent'))}   "
            f"DISK {output.pct(s.get('disk_max_percent'))}   GPU {output.pct(s.get('gpu_util_percent'))}   "
            f"NET rx {output.rate(s.get('net_bytes_recv'))} tx {output.rate(s.get('net_bytes_sent'))}"
        )
        key, desc = SORTS[sort]
        procs = sorted(self.procs.get("procs") or [], key=lambda p: (p.get(key) is None, p.get(key) or 0), reverse=desc)
        table_rows = [
            (
                p["pid"],
                p.get("user", ""),
                p.get("status", ""),
                f"{p.get('cpu_percent', 0):.1f}",
                f"{p.get('mem_percent', 0):.1f}",
                output.size(p.get("rss")),
                p.get("threads", ""),
                p.get("name", ""),
                p.get("cmdline", ""),
            )
            for p in procs[:rows]
        ]
        snap = (
            f"processes: {len(procs)} of {self.procs.get('total') or '-'} at {output.when(self.procs.get('ts'))}"
            if self.procs.get("ts")
            else "processes: none yet"
        )
        snap += f", sorted by {sort}"
        parts: list[Any] = [
            head,
            figures,
            Text(snap, style="dim"),
            output.table(
                ("PID", "USER", "S", "CPU%", "MEM%", "RSS", "THR", "NAME", "COMMAND"),
                table_rows,
                right=("PID", "CPU%", "MEM%", "RSS", "THR"),
            ),
        ]
        parts += [Text(n, style="yellow") for n in self.notes]
        return Group(*parts)


KEYS = {b"c": "cpu", b"P": "cpu", b"m": "mem", b"M": "mem", b"p": "pid", b"n": "name", b"t": "threads"}


@contextlib.contextmanager
def keys(q: queue.Queue, enabled: bool):
    """While live in a terminal: each key press goes to `q` (cbreak mode, so Ctrl-C still sends
    SIGINT); the terminal's mode is restored on the way out."""
    if not enabled:
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if select.select([fd], [], [], 0.2)[0]:
                ch = os.read(fd, 1)
                if not ch:
                    return
                q.put(("key", ch))

    tty.setcbreak(fd)
    t = threading.Thread(target=watch, name="top-keys", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(1.0)
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def pump(events, q: queue.Queue) -> None:
    """The stream, read on its own thread so the screen can redraw every second meanwhile."""
    try:
        for item in events:
            q.put(item)
    except Exception as exc:  # the stream ended or broke: the main loop reports it
        q.put(("error", exc))


def live(con, state: TopState, events, args: argparse.Namespace, rows: int) -> None:
    from rich.live import Live

    q: queue.Queue = queue.Queue(maxsize=10_000)
    sort = args.sort
    threading.Thread(target=pump, args=(events, q), name="top-stream", daemon=True).start()
    with (
        keys(q, sys.stdin.isatty()),
        Live(state.render(sort, rows), console=con, screen=True, auto_refresh=False, transient=True) as screen,
    ):
        while True:
            try:
                kind, ev = q.get(timeout=1.0)
            except queue.Empty:
                kind, ev = "tick", None  # redraw: the frame's age shows a host gone quiet
            if kind == "key":
                if ev in (b"q", b"Q"):
                    return
                sort = KEYS.get(ev, sort)
            elif kind == "error":
                raise ev
            else:
                state.apply(kind, ev or {})
            screen.update(state.render(sort, rows), refresh=True)
            if args.iterations and state.frames >= args.iterations:
                break
    con.print(state.render(sort, rows))


@command
def top(args: argparse.Namespace) -> int:
    host = args.host
    with client(args) as c:
        d = c.get(f"/api/v1/hosts/{host}")  # 404 names an unknown host before anything is drawn
        try:
            procs = c.get(f"/api/v1/hosts/{host}/processes", params={"limit": 500})
        except CliError:  # no history tables yet: the stream fills the table
            procs = None
        state = TopState(host, d.get("host"), d.get("frame"), procs)
        json_mode = want_json(args)
        con = output.console()
        rows = args.procs or max(5, (con.size.height if con.is_terminal else 25) - 8)
        if args.once:
            if json_mode:
                output.print_json({"host": d.get("host"), "last": state.last, "processes": state.procs})
            else:
                con.print(state.render(args.sort, rows))
            return 0
        try:
            with c.events("/api/v1/stream", {"hosts": host, "kinds": "frame,procs,app,alert,host"}) as events:
                if con.is_terminal and not json_mode:
                    live(con, state, events, args, rows)
                    return 0
                if not json_mode:
                    con.print(state.render(args.sort, rows))
                for kind, ev in events:
                    if kind == "heartbeat" or not state.apply(kind, ev or {}):
                        continue
                    if json_mode:
                        output.print_jsonl(ev)
                    elif kind == "frame":
                        con.print()
                        con.print(state.render(args.sort, rows))
                        sys.stdout.flush()
                    if args.iterations and state.frames >= args.iterations:
                        break
        except KeyboardInterrupt:
            pass  # Ctrl-C: the normal way out of top
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "top",
        help="one host live, like top: frame values and the process table (q or Ctrl-C quits)",
        description="One host live: frame values and the process table, redrawn as the gateway streams them. "
        "Keys: q quit, c/P sort by CPU, m/M by memory, p by pid, n by name, t by threads.",
    )
    p.add_argument("host", metavar="HOST", type=ident, help="host id")
    p.add_argument("--sort", choices=sorted(SORTS), default="cpu", help="process order (default cpu)")
    p.add_argument("--procs", type=int, default=0, help="process rows shown (default: what fits)")
    p.add_argument(
        "-n", "--iterations", type=int, default=0, help="stop after this many live frames (default: until q)"
    )
    p.add_argument("--once", action="store_true", help="print the latest known state and exit")
    add_common(p)
    p.set_defaults(func=top)
