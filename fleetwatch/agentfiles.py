"""What `fleetwatch agent install` writes and runs besides the units: its journal of changes
(what a rollback undoes), the checked file and process helpers, the credentials file reader, and
the agents' virtualenv installed from the lock (fleetwatch/agent.py is the command itself)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import urllib.parse
import venv
from pathlib import Path

# The directory fleetwatch, libs and services are imported from: the source tree, or the
# site-packages a wheel was installed into.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# The agents' lock: in the source tree, and copied into the package when a wheel is built
# (tools/build_hooks.py), so an installed fleetwatch installs the same pinned, hashed files.
SOURCE_LOCK = PACKAGE_ROOT / "requirements" / "agent.txt"
PACKAGED_LOCK = Path(__file__).resolve().parent / "agent-requirements.txt"


class InstallError(RuntimeError):
    pass


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.replace("_", "").isalnum():
            raise InstallError(f"{path}:{n}: not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


class Journal:
    """What install changed, in order, so that a failure undoes exactly that."""

    def __init__(self) -> None:
        self.created: list[str] = []  # files and directories, in creation order
        self.units: list[str] = []  # units started/enabled

    def to_json(self) -> dict:
        return {"created": self.created, "units": self.units}


def run_checked(argv: list[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise InstallError(f"{' '.join(argv)} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[:500]}")
    return r


def mkdir_logged(path: Path, j: Journal, mode: int = 0o755) -> None:
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=mode)
        j.created.append(str(d))


def write_new(path: Path, text: str, j: Journal, mode: int = 0o644) -> None:
    if path.exists():
        raise InstallError(f"{path} exists already (another install?); uninstall first")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    j.created.append(str(path))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def agent_lock() -> Path:
    return SOURCE_LOCK if SOURCE_LOCK.is_file() else PACKAGED_LOCK


def default_source() -> str:
    """What a non-offline install puts into the agents' virtualenv: this source tree; else the
    wheel (or directory) this fleetwatch was installed from, which pip and uv record in
    direct_url.json; else this same release from the index."""
    if (PACKAGE_ROOT / "pyproject.toml").is_file():
        return str(PACKAGE_ROOT)
    try:
        dist = importlib.metadata.distribution("fleetwatch")
    except importlib.metadata.PackageNotFoundError:
        return str(PACKAGE_ROOT)
    try:
        url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    except ValueError:
        url = ""
    if url.startswith("file://"):
        path = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        if path.exists():
            return str(path)
    return f"fleetwatch=={dist.version}"


def make_venv(prefix: Path, j: Journal, offline: bool, source: str | None) -> None:
    target = prefix / "venv"
    if offline:
        # No package index reachable: a virtualenv whose packages are this interpreter's, and
        # fleetwatch from where it is imported now (source tree or installed wheel) unless
        # --source names another directory.
        venv.EnvBuilder(with_pip=False, symlinks=True).create(target)
        j.created.append(str(target))
        site = next((target / "lib").glob("python3*/site-packages"))
        paths = [source or str(PACKAGE_ROOT)] + [p for p in sys.path if p.endswith("site-packages")]
        (site / "fleetwatch-agent.pth").write_text("\n".join(dict.fromkeys(paths)) + "\n")
        return
    venv.EnvBuilder(with_pip=True, symlinks=True).create(target)
    j.created.append(str(target))
    pip = str(target / "bin" / "pip")
    lock = agent_lock()
    if not lock.is_file():
        raise InstallError(f"the agents' lock {lock} is missing (a fleetwatch built without it?)")
    # Every dependency exactly as locked, hashes checked; then fleetwatch alone, so that nothing
    # its metadata asks for is resolved afresh from the index.
    run_checked([pip, "install", "--quiet", "--require-hashes", "-r", str(lock)], timeout=900)
    run_checked([pip, "install", "--quiet", "--no-deps", source or default_source()], timeout=900)
