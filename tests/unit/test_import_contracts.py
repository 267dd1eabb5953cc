"""`make lint`'s gates catch what they are there for: the import contracts
(tools/import_contracts.py) and ruff's rules, each shown failing on a copy of the tree with one
deliberate breach, and passing on the tree as it is."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tools import import_contracts

RUFF = Path(sys.executable).with_name("ruff")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """libs/, services/ and pyproject.toml copied: what the checkers read."""
    for d in ("libs", "services"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__", "*.sql", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + "\n" + line + "\n")


def _prepend(path: Path, line: str) -> None:
    text = path.read_text()
    # after the module docstring and `from __future__`, where an import really goes
    anchor = "from __future__ import annotations\n"
    assert anchor in text, path
    path.write_text(text.replace(anchor, anchor + "\n" + line + "\n", 1))


def test_the_tree_keeps_every_contract() -> None:
    assert import_contracts.check(ROOT) == []
    r = subprocess.run([sys.executable, "-m", "tools.import_contracts"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("path", "line", "rule"),
    [
        ("services/gateway/app.py", "from services.alerter import machine", "a service imports no other service"),
        ("services/gateway/app.py", "import services.ingest.writer", "a service imports no other service"),
        ("services/gateway/controllers/hosts.py", "from ...alerter import rules", "a service imports no other service"),
        ("services/collector/hostinfo.py", "import fleetwatch", "services and libs do not import fleetwatch"),
        ("libs/runtime/service.py", "from fleetwatch.cli import client", "services and libs do not import fleetwatch"),
        ("libs/runtime/db.py", "from services.ingest import writer", "libs imports no service"),
        ("libs/schemas/ids.py", "import socket", "libs.schemas imports no I/O library"),
        ("libs/schemas/metrics.py", "from libs.runtime import connect", "libs.schemas imports no I/O library"),
        ("libs/schemas/control.py", "import nats.js", "libs.schemas imports no I/O library"),
    ],
)
def test_a_breach_is_reported_with_file_line_and_rule(tree: Path, path: str, line: str, rule: str) -> None:
    target = tree / path
    assert target.exists(), path
    # a relative import placed inside a function: lazy imports are dependencies too
    _append(target, "def _lazy():\n    " + line if line.startswith("from ...") else line)
    violations = import_contracts.check(tree)
    assert [v.rule for v in violations] == [rule], violations
    assert violations[0].path == path
    r = subprocess.run(
        [sys.executable, "-m", "tools.import_contracts", str(tree)], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 1
    assert f"{path}:" in r.stderr and rule in r.stderr


def test_same_service_and_libs_imports_are_allowed(tree: Path) -> None:
    _append(tree / "services/gateway/app.py", "from services.gateway import config as _config")
    _append(tree / "services/gateway/controllers/hosts.py", "from .. import config as _cfg")
    _append(tree / "services/alerter/machine.py", "from libs.runtime import connect as _connect")
    assert import_contracts.check(tree) == []


def test_ruff_fails_on_an_unused_import_and_passes_the_tree(tree: Path) -> None:
    clean = subprocess.run(
        [str(RUFF), "check", "--no-cache", "libs", "services"], cwd=tree, capture_output=True, text=True
    )
    assert clean.returncode == 0, clean.stdout
    _prepend(tree / "services/gateway/app.py", "import textwrap")
    r = subprocess.run([str(RUFF), "check", "--no-cache", "libs", "services"], cwd=tree, capture_output=True, text=True)
    assert r.returncode == 1
    assert "F401" in r.stdout and "services/gateway/app.py" in r.stdout
