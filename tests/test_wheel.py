"""The wheel `make dist` builds, installed into a fresh virtualenv with no source tree in reach:
the CLI answers; fleetwatch, libs and services and their data (the built UI, the migrations, the
agents' lock) all come from the venv's site-packages; the gateway serves its UI from there; and
`fleetwatch agent install --offline` run from that venv starts the agents under a real systemd
(tests/support/systemd_ns.py) and uninstall leaves nothing, as tests/test_deploy_agent.py checks
for the source tree.

Everything is real: `python -m build` without isolation (the locked setuptools), a `python -m venv`,
installs from the lock files with every hash checked, a systemd booted in a namespace, nats-server
and PostgreSQL from the suite's fixtures."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from pathlib import Path

import pytest

from fleetwatch.agent import AGENTS
from libs.embedded.stack import make_private_dir
from tests import test_deploy_agent as deploy
from tests.conftest import ROOT
from tests.support.systemd_ns import available

pytestmark = pytest.mark.timeout(300)

# The namespace's systemd, booted per test (reused from the source-tree agent tests, not copied).
ns = deploy.ns

UV = Path(sys.executable).parent / "uv"


def _clean_env() -> dict[str, str]:
    """This process's environment without what would put the source tree (or this suite's venv,
    or its settings) in front of the wheel's code."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("FLEETWATCH_")}


def _run(argv: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=_clean_env())
    assert r.returncode == 0, f"{argv}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def base():
    # The namespace mounts private tmpfs on /tmp, /run and /var/tmp: a venv there would be
    # invisible to the agents it runs. /var/lib is seen alike inside and out; outside the
    # repository, so nothing can come from the source tree by accident. Without root (no
    # namespace test then) a temporary directory does.
    parent = "/var/lib" if os.access("/var/lib", os.W_OK) else tempfile.gettempdir()
    d = make_private_dir(base=parent, prefix="fleetwatch-test-wheel-")
    (d / "cwd").mkdir()  # the empty working directory every installed command runs in
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def wheel(base) -> Path:
    """The wheel, built as `make dist` builds it, but by way of the sdist (build's default without
    --sdist/--wheel): it proves the sdist carries what the wheel needs, and the build runs in a
    temporary copy, away from the tree's build/ that a concurrent `make dist` uses."""
    assert (ROOT / "ui" / "dist" / "index.html").is_file(), "the UI is not built: `make ui` first"
    out = base / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)], cwd=ROOT, timeout=280)
    (whl,) = out.glob("fleetwatch-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(base, wheel) -> Path:
    """A fresh venv with the wheel and what its CLI, agents and gateway import."""
    target = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(target)], cwd=base)
    uv = [str(UV), "pip", "install", "--quiet", "--python", str(target / "bin" / "python")]
    # The agents' lock exactly as `fleetwatch agent install` uses it, and the gateway's.
    locks = ["-r", str(ROOT / "requirements" / "agent.txt"), "-r", str(ROOT / "requirements" / "gateway.txt")]
    _run([*uv, "--require-hashes", "--no-deps", *locks], cwd=base)
    # The CLI's group has no lock file of its own: its packages are resolved at dev.txt's pins (the
    # one resolution every lock file comes from), every file hash-checked, the wheel by its own.
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    req = base / "wheel-requirements.txt"
    req.write_text(f"fleetwatch[agent,cli] @ {wheel.as_uri()} --hash=sha256:{digest}\n")
    _run([*uv, "--require-hashes", "-c", str(ROOT / "requirements" / "dev.txt"), "-r", str(req)], cwd=base)
    _run([str(UV), "pip", "check", "--python", str(target / "bin" / "python")], cwd=base)
    return target


def _site_packages(venv: Path) -> Path:
    (site,) = (venv / "lib").glob("python3*/site-packages")
    return site


def test_wheel_holds_the_runtime_data_and_no_sources_of_the_rest(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"fleetwatch", "libs", "services", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    assert "services/gateway/ui/index.html" in names
    assets = [n for n in names if n.startswith("services/gateway/ui/assets/")]
    assert any(n.endswith(".js") for n in assets) and any(n.endswith(".css") for n in assets), assets
    for component, suffix in (("gateway", ".sql"), ("replicator", ".sql"), ("ingest", ".py")):
        src = sorted(p.name for p in (ROOT / "services" / component / "migrations").glob(f"*{suffix}"))
        packed = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith(f"services/{component}/migrations/"))
        assert src and packed == src, (component, packed, src)
    with zipfile.ZipFile(wheel) as z:
        assert z.read("fleetwatch/agent-requirements.txt") == (ROOT / "requirements" / "agent.txt").read_bytes()
    assert not [n for n in names if "node_modules" in n or "__pycache__" in n or n.endswith(".pyc")]


def test_cli_answers_from_the_wheel(venv, base):
    r = _run([str(venv / "bin" / "fleetwatch"), "-h"], cwd=base / "cwd")
    assert "agent" in r.stdout and "dev" in r.stdout, r.stdout
    r = _run([str(venv / "bin" / "fleetwatch"), "dev", "--help"], cwd=base / "cwd")
    assert r.stdout.startswith("usage: fleetwatch dev"), r.stdout


# Run by the venv's interpreter in isolated mode (-I: no PYTHON* variables, no cwd on sys.path).
PROBE = """
import json
import fleetwatch, libs, services.collector, services.gateway
from fleetwatch.agentfiles import PACKAGE_ROOT, agent_lock, default_source
from services.gateway.app import MIGRATIONS, create_app, ui_dir
from services.gateway.config import GatewayConfig
from services.ingest.schema import MIGRATIONS as INGEST
from services.replicator.service import MIGRATIONS as REPLICATOR
from litestar.testing import TestClient

config = GatewayConfig()
asset = next((ui_dir(config) / "assets").glob("*.js"))
with TestClient(create_app(config, lifespan_enabled=False)) as client:
    served = client.get(f"/assets/{asset.name}")
print(json.dumps({
    "modules": [m.__file__ for m in (fleetwatch, libs, services.collector, services.gateway)],
    "ui_dir": str(ui_dir(config)),
    "migrations": {str(d): sorted(p.name for p in d.iterdir()) for d in (MIGRATIONS, INGEST, REPLICATOR)},
    "package_root": str(PACKAGE_ROOT),
    "agent_lock": str(agent_lock()),
    "default_source": default_source(),
    "asset": [served.status_code, served.content == asset.read_bytes()],
}))
"""


def test_packages_data_and_ui_resolve_inside_the_venv(venv, base, wheel):
    r = _run([str(venv / "bin" / "python"), "-I", "-c", PROBE], cwd=base / "cwd")
    got = json.loads(r.stdout)
    site = _site_packages(venv).resolve()
    paths = [*got["modules"], got["ui_dir"], *got["migrations"], got["package_root"], got["agent_lock"]]
    for p in paths:
        assert Path(p).resolve().is_relative_to(site), (p, site)
        assert not Path(p).resolve().is_relative_to(ROOT), p
    assert Path(got["ui_dir"]) == site / "services" / "gateway" / "ui"
    assert (Path(got["ui_dir"]) / "index.html").read_bytes() == (ROOT / "ui" / "dist" / "index.html").read_bytes()
    # The gateway, run from the wheel with cwd elsewhere, serves the UI the wheel carries.
    assert got["asset"] == [200, True], got["asset"]
    assert all(got["migrations"].values()), got["migrations"]
    # A non-offline agent install from this venv would install this very wheel, from the lock.
    assert got["agent_lock"].endswith("fleetwatch/agent-requirements.txt")
    assert got["default_source"] == str(wheel)


@pytest.mark.skipif(bool(available()), reason=f"systemd namespace unavailable: {available()}")
async def test_agent_install_offline_from_the_wheel_answers_then_uninstall_leaves_nothing(
    venv, base, ns, fresh_nats, pg_cluster
):
    fleetwatch = str(venv / "bin" / "fleetwatch")
    prefix_parent = f"/run/fw-wheel-{uuid.uuid4().hex[:6]}"
    prefix = f"{prefix_parent}/agent"
    ns.run(["mkdir", "-p", f"{prefix_parent}/sudoers.d"])
    creds = ns.path(f"{prefix_parent}/agent.env")
    creds.write_text((fresh_nats.root / "nats" / "env" / f"agent-{deploy.HOST}.env").read_text())
    os.chmod(creds, 0o600)
    before = deploy._snapshot(ns, prefix_parent)

    dsn = pg_cluster.dsn("postgres")
    # As test_deploy_agent's basic install, from the wheel's entry point instead of the tree.
    install = [
        fleetwatch,
        "agent",
        "install",
        "--server",
        fresh_nats.url,
        "--host-id",
        deploy.HOST,
        "--credentials",
        f"{prefix_parent}/agent.env",
        "--prefix",
        prefix,
        "--unit-dir",
        deploy.UNIT_DIR,
        "--sudoers-dir",
        f"{prefix_parent}/sudoers.d",
        "--runtime",
        "--offline",
        "--timeout",
        "30",
        # The base interpreter lives where a DynamicUser cannot traverse (see test_deploy_agent).
        "--agent-user",
        "root",
        "--env",
        f"FLEETWATCH_REPLICATOR_CENTRAL_DSN={dsn}",
        "--env",
        f"FLEETWATCH_REPLICATOR_LOCAL_DSN={dsn}",
    ]
    _run(ns.enter(install), cwd=base / "cwd")
    try:
        for agent in AGENTS:
            unit = f"fleetwatch-agent-{agent}.service"
            state = ns.run(["systemctl", "is-active", unit], check=False).stdout.strip()
            assert state == "active", (
                agent,
                state,
                ns.run(["journalctl", "-u", unit, "-n", "30", "--no-pager"], check=False).stdout,
            )
        assert ns.path(f"{prefix}/etc/agent.env").stat().st_mode & 0o077 == 0
        # The agents' venv reads fleetwatch from the wheel's venv, never from the source tree.
        (pth,) = ns.path(f"{prefix}/venv").glob("lib/python3*/site-packages/fleetwatch-agent.pth")
        assert pth.read_text().split() == [str(_site_packages(venv))], pth.read_text()
        probe = "import fleetwatch, services.collector; print(fleetwatch.__file__, services.collector.__file__)"
        where = ns.run([f"{prefix}/venv/bin/python", "-I", "-c", probe]).stdout.split()
        assert all(Path(p).is_relative_to(_site_packages(venv)) for p in where), where
        # Connected: the collector answers on NATS, seen from the central side.
        assert await deploy._collector_answers(fresh_nats)
    finally:
        uninstall = [fleetwatch, "agent", "uninstall", "--prefix", prefix, "--unit-dir", deploy.UNIT_DIR]
        u = subprocess.run(
            ns.enter(uninstall), capture_output=True, text=True, timeout=120, cwd=base / "cwd", env=_clean_env()
        )
    assert u.returncode == 0, u.stdout + u.stderr
    assert deploy._snapshot(ns, prefix_parent) == before
