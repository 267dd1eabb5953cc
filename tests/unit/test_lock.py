"""The lock (requirements/*.txt, `make lock`) agrees with pyproject.toml: every group's direct
requirements are pinned in its file at a version the range allows, every pin carries hashes, and
a package has one version across every install path (each group file is compiled constrained by
dev.txt). Offline: a stale lock fails here before an install on a fresh machine would."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

LOCKS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
GROUPS = sorted(PYPROJECT["optional-dependencies"])
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)")


def parse_lock(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes)."""
    pins: dict[str, tuple[str, int]] = {}
    name = ""
    for line in path.read_text().splitlines():
        m = PIN.match(line)
        if m:
            name = canonicalize_name(m.group(1))
            pins[name] = (m.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, n = pins[name]
            pins[name] = (version, n + 1)
    return pins


def direct_requirements(group: str) -> list[Requirement]:
    """The core dependencies plus a group, with `fleetwatch[x,y]` self-references expanded."""
    out = [Requirement(r) for r in PYPROJECT["dependencies"]]
    seen: set[str] = set()

    def add(g: str) -> None:
        if g in seen:
            return
        seen.add(g)
        for text in PYPROJECT["optional-dependencies"][g]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "fleetwatch":
                for sub in req.extras:
                    add(sub)
            else:
                out.append(req)

    add(group)
    return out


DEV = parse_lock(LOCKS / "dev.txt")


def test_every_group_that_installs_somewhere_has_a_lock() -> None:
    # `all` is dev minus the tools; dev.txt covers it.
    assert {p.stem for p in LOCKS.glob("*.txt")} == (set(GROUPS) - {"all"})


@pytest.mark.parametrize("group", [g for g in GROUPS if g != "all"])
def test_group_lock_pins_its_requirements_within_range_with_hashes(group: str) -> None:
    pins = parse_lock(LOCKS / f"{group}.txt")
    assert pins, group
    for req in direct_requirements(group):
        if req.marker and not req.marker.evaluate({"python_version": "3.11", "sys_platform": "linux"}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{group}.txt lacks {req} (run make lock)"
        version = pins[name][0]
        assert req.specifier.contains(version, prereleases=True), f"{group}.txt pins {name}=={version}, outside {req}"
    for name, (version, hashes) in pins.items():
        assert hashes >= 1, f"{group}.txt: {name} has no hash"
        # one version per package across every install path
        assert DEV.get(name, (version, 0))[0] == version, f"{name}: {group}.txt {version} != dev.txt {DEV[name][0]}"
        assert name in DEV, f"{group}.txt pins {name}, which dev.txt (the one resolution) lacks"
