"""The import contracts `make lint` enforces (python -m tools.import_contracts [ROOT]).

- a service imports no other service: `services.X` never imports `services.Y`, so each can ship
  alone (its image copies only libs/ and its own folder);
- neither a service nor a `libs` module imports the `fleetwatch` CLI package, `tests` or `bench`;
- `libs` imports no service;
- `libs.schemas` (the message contracts, shared by every side of every subject) imports no I/O:
  no network, process, database or event-loop library, and not `libs.runtime`/`libs.embedded`.

Imports inside functions count too: a lazy import is still a dependency. Relative imports are
resolved against the importing module's package.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# What `libs.schemas` must not reach: I/O in the standard library and in our dependencies.
SCHEMAS_FORBIDDEN = (
    "asyncio",
    "socket",
    "ssl",
    "select",
    "selectors",
    "subprocess",
    "http",
    "urllib",
    "sqlite3",
    "shutil",
    "nats",
    "asyncpg",
    "httpx",
    "psutil",
    "pynvml",
    "aiosmtplib",
    "apscheduler",
    "litestar",
    "uvicorn",
    "websockets",
    "libs.runtime",
    "libs.embedded",
)
OUTSIDE_RUNTIME = ("fleetwatch", "tests", "bench", "tools")


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    importer: str
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}: {self.rule}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the tree."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            yield node.lineno, target
            # `from services import gateway` imports services.gateway
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def check_module(importer: str, imported: str) -> str:
    """The rule `importer` importing `imported` breaks, or ''."""
    parts = importer.split(".")
    if parts[0] == "services" and len(parts) > 1:
        service = ".".join(parts[:2])
        target = imported.split(".")
        if target[0] == "services" and len(target) > 1 and ".".join(target[:2]) != service:
            # `from services import X` is reported once, as services.X
            return "a service imports no other service"
    if parts[0] in ("services", "libs"):
        for outside in OUTSIDE_RUNTIME:
            if _within(imported, outside):
                return f"services and libs do not import {outside}"
    if parts[0] == "libs" and _within(imported, "services") and imported != "services":
        return "libs imports no service"
    if _within(importer, "libs.schemas"):
        for io in SCHEMAS_FORBIDDEN:
            if _within(imported, io):
                return "libs.schemas imports no I/O library"
    return ""


def check(root: Path) -> list[Violation]:
    found: list[Violation] = []
    for top in ("libs", "services"):
        for path in sorted((root / top).rglob("*.py")):
            module = module_name(root, path)
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            seen: set[tuple[int, str]] = set()
            for line, imported in imports(tree, module, path.name == "__init__.py"):
                rule = check_module(module, imported)
                # `from services.x import y` yields services.x and services.x.y: report it once
                key = (line, rule)
                if rule and key not in seen:
                    seen.add(key)
                    found.append(Violation(str(path.relative_to(root)), line, module, imported, rule))
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1]
    violations = check(root)
    for v in violations:
        print(v, file=sys.stderr)
    if violations:
        print(f"{len(violations)} import contract violation(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
