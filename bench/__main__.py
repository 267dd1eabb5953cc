"""`make bench [NAME=x]`: run every benchmark module in bench/ (or one), each in its own process.

A benchmark is `bench/<name>.py` with a `main()`; it prints `RESULT <name> <value> <unit>` lines,
the first of them the figure its issue sets a goal for. Ratios are measured against a raw
baseline in the same run, never as bare absolute times.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules([str(HERE)]) if not m.name.startswith("_") and m.name != "common"
    )


def main(argv: list[str]) -> int:
    wanted = [a for a in argv if a] or names()
    unknown = [n for n in wanted if n not in names()]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names())}", file=sys.stderr)
        return 2
    rc = 0
    for n in wanted:
        print(f"== bench {n}", flush=True)
        r = subprocess.run([sys.executable, "-m", f"bench.{n}"], cwd=HERE.parent)
        rc = rc or r.returncode
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
