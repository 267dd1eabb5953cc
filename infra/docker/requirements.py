"""Print the requirements of one service: the project's core dependencies plus that service's
optional-dependency group from pyproject.toml (self-references like `fleetwatch[x]` expanded).
The Dockerfiles install exactly this, so an image carries only its own service's libraries.

    python infra/docker/requirements.py ingest > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, group: str) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    groups = project.get("optional-dependencies", {})
    if group not in groups:
        raise SystemExit(f"no optional-dependency group {group!r} in {pyproject} (have: {', '.join(sorted(groups))})")
    out: list[str] = list(project.get("dependencies", []))
    seen: set[str] = set()

    def add(g: str) -> None:
        if g in seen:
            return
        seen.add(g)
        for req in groups[g]:
            m = re.fullmatch(rf"{re.escape(project['name'])}\[([^\]]+)\]", req.strip())
            if m:
                for sub in m.group(1).split(","):
                    add(sub.strip())
            else:
                out.append(req)

    add(group)
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: requirements.py GROUP")
    print("\n".join(requirements(Path(__file__).resolve().parents[2] / "pyproject.toml", sys.argv[1])))
