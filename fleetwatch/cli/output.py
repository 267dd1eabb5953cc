"""Human output (rich tables; plain text when not a terminal) and `--json` output.

`--json` prints what the API answered, unchanged, so scripts can rely on the API's schema."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    # Piped output is read by people through `less` or grep: wide, never wrapped at 80.
    width = None if tty or os.environ.get("COLUMNS") else 200
    return Console(file=stream, highlight=False, soft_wrap=not tty, width=width, no_color=not tty or None)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def print_jsonl(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


# Above this many rows a table is laid out here, not by rich: rich measures every cell of every
# row (10,000 hosts took seconds); this is one pass over the strings.
PLAIN_ROWS = 300


class PlainTable:
    """A big table as aligned plain text (styles dropped)."""

    def __init__(self, columns: Sequence[str], rows: list[list[str]], right: set[str]) -> None:
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        last = len(columns) - 1

        def line(cells: Sequence[str]) -> str:
            out = [
                (v.rjust(w) if columns[i] in right else (v if i == last else v.ljust(w)))
                for i, (v, w) in enumerate(zip(cells, widths, strict=False))
            ]
            return "  ".join(out).rstrip()

        self.text = "\n".join([line(columns)] + [line(r) for r in rows]) + "\n"

    def __rich__(self) -> Text:
        return Text(self.text.rstrip("\n"))


def table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None, right: Iterable[str] = ()
) -> Table | PlainTable:
    right = set(right)
    cells = [list(r) for r in rows]
    if len(cells) > PLAIN_ROWS:
        return PlainTable(
            columns,
            [[v.plain if isinstance(v, Text) else ("" if v is None else str(v)) for v in r] for r in cells],
            right,
        )
    t = Table(title=title, box=None, header_style="bold", pad_edge=False, title_justify="left")
    for c in columns:
        t.add_column(
            c,
            justify="right" if c in right else "left",
            no_wrap=True,
            overflow="ellipsis" if c != columns[-1] else "fold",
        )
    for r in cells:
        t.add_row(*[v if isinstance(v, Text) else Text("" if v is None else str(v)) for v in r])
    if not cells:
        t.caption, t.caption_justify, t.caption_style = "(none)", "left", "dim"
    return t


def show(renderable: Any) -> None:
    if isinstance(renderable, PlainTable):
        sys.stdout.write(renderable.text)
        sys.stdout.flush()
        return
    console().print(renderable)


def pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def size(n: float | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}P"


def rate(n: float | None) -> str:
    return "-" if n is None else size(n) + "/s"


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return "never"
    d = max(0.0, (now or time.time()) - ts)
    if d < 90:
        return f"{d:.0f}s ago"
    if d < 5400:
        return f"{d / 60:.0f}m ago"
    if d < 36 * 3600:
        return f"{d / 3600:.0f}h ago"
    return f"{d / 86400:.0f}d ago"


def duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = float(s)
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(s), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h" if d else (f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s")


STATE_STYLE = {
    "online": "green",
    "running": "green",
    "ok": "green",
    "succeeded": "green",
    "resolved": "green",
    "offline": "red",
    "crashed": "red",
    "failed": "red",
    "fatal": "red",
    "error": "red",
    "firing": "red",
    "zombie": "red",
    "timeout": "red",
    "starting": "yellow",
    "stopping": "yellow",
    "pending": "yellow",
    "queued": "yellow",
    "backoff": "yellow",
}


def state(s: str | None) -> Text:
    s = s or "-"
    return Text(s, style=STATE_STYLE.get(s, ""))
