"""`fleetwatch agent install|uninstall` against a real systemd booted in a private namespace
(tests/support/systemd_ns.py): install starts the agents and they answer on NATS; uninstall
leaves systemd and the files as they were; an install with wrong credentials rolls back; over
TLS, the right `--tls-ca` answers and a wrong one rolls back as soon as the agent keeps exiting.

Everything the installer writes goes to the namespace's private tmpfs (/run, /tmp): units in
/run/systemd/system enabled with --runtime, the prefix and the sudoers directory under /run (PrivateTmp=yes hides /tmp from the units)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import pytest

from fleetwatch.agent import sudoers_text
from libs.runtime import connect
from libs.schemas import Codec, MetricFrame, subjects
from tests.conftest import ROOT
from tests.support.systemd_ns import SystemdNamespace, available

pytestmark = [
    pytest.mark.skipif(bool(available()), reason=f"systemd namespace unavailable: {available()}"),
    pytest.mark.timeout(300),
]

HOST = "host-a"
UNIT_DIR = "/run/systemd/system"


@pytest.fixture
def ns(workdir):
    with SystemdNamespace(log_path=workdir / f"agent-ns-{uuid.uuid4().hex[:6]}.log") as n:
        yield n


def _snapshot(ns: SystemdNamespace, prefix_parent: str) -> dict:
    units = ns.run(
        ["systemctl", "list-units", "--all", "--no-legend", "--plain", "fleetwatch-agent*"], check=False
    ).stdout
    files = ns.run(["systemctl", "list-unit-files", "--no-legend", "--plain", "fleetwatch-agent*"], check=False).stdout
    tree = ns.run(["find", UNIT_DIR, prefix_parent], check=False).stdout
    return {"units": units.strip(), "unit_files": files.strip(), "tree": sorted(tree.split())}


def _install_argv(ns, prefix: str, creds_file: str, server: str, timeout: float, extra: list[str]) -> list[str]:
    return ns.enter(
        [
            sys.executable,
            "-m",
            "fleetwatch",
            "agent",
            "install",
            "--server",
            server,
            "--host-id",
            HOST,
            "--credentials",
            creds_file,
            "--prefix",
            prefix,
            "--unit-dir",
            UNIT_DIR,
            "--sudoers-dir",
            os.path.dirname(prefix) + "/sudoers.d",
            "--runtime",
            "--offline",
            "--timeout",
            str(timeout),
            *extra,
        ]
    )


def _run_in(ns, argv, timeout=240):
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


async def _collector_answers(nats_stack, settings=None) -> bool:
    nc = await connect(settings or nats_stack.settings("admin"), "agent-check", retry_forever=False)
    try:
        for _ in range(40):
            try:
                msg = await nc.request(subjects.sample(HOST), b"", timeout=2)
                return Codec(MetricFrame).decode(msg.data).host == HOST
            except Exception:
                await asyncio.sleep(0.5)
        return False
    finally:
        await nc.close()


async def test_install_answers_then_uninstall_leaves_nothing(ns, fresh_nats, pg_cluster):
    base = f"/run/fw-agent-{uuid.uuid4().hex[:6]}"
    ns.run(["mkdir", "-p", f"{base}/sudoers.d"])
    creds = ns.path(f"{base}/agent.env")
    creds.write_text((fresh_nats.root / "nats" / "env" / f"agent-{HOST}.env").read_text())
    os.chmod(creds, 0o600)
    before = _snapshot(ns, base)

    dsn = pg_cluster.dsn("postgres")
    r = _run_in(
        ns,
        _install_argv(
            ns,
            f"{base}/agent",
            f"{base}/agent.env",
            fresh_nats.url,
            20,
            [
                # The interpreter here lives under /root (pyenv), which neither a DynamicUser nor an
                # unprivileged commander can traverse: root units here, same hardening otherwise.
                "--agent-user",
                "root",
                "--env",
                f"FLEETWATCH_REPLICATOR_CENTRAL_DSN={dsn}",
                "--env",
                f"FLEETWATCH_REPLICATOR_LOCAL_DSN={dsn}",
            ],
        ),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        for agent in ("collector", "commander", "replicator"):
            state = ns.run(["systemctl", "is-active", f"fleetwatch-agent-{agent}.service"], check=False).stdout.strip()
            assert state == "active", (
                agent,
                state,
                ns.run(["journalctl", "-u", f"fleetwatch-agent-{agent}", "-n", "30", "--no-pager"], check=False).stdout,
            )
        unit = ns.path(f"{UNIT_DIR}/fleetwatch-agent-collector.service").read_text()
        assert "User=root" in unit and "NoNewPrivileges=yes" in unit and "ProtectSystem=strict" in unit
        assert "User=root" in ns.path(f"{UNIT_DIR}/fleetwatch-agent-commander.service").read_text()
        env_file = ns.path(f"{base}/agent/etc/agent.env")
        assert env_file.stat().st_mode & 0o077 == 0
        # Answers on NATS, seen from the central side.
        assert await _collector_answers(fresh_nats)
    finally:
        u = _run_in(
            ns,
            ns.enter(
                [
                    sys.executable,
                    "-m",
                    "fleetwatch",
                    "agent",
                    "uninstall",
                    "--prefix",
                    f"{base}/agent",
                    "--unit-dir",
                    UNIT_DIR,
                ]
            ),
        )
    assert u.returncode == 0, u.stdout + u.stderr
    assert _snapshot(ns, base) == before


async def test_install_with_wrong_credentials_rolls_back(ns, fresh_nats):
    base = f"/run/fw-agent-{uuid.uuid4().hex[:6]}"
    ns.run(["mkdir", "-p", f"{base}/sudoers.d"])
    good = (fresh_nats.root / "nats" / "env" / f"agent-{HOST}.env").read_text()
    bad = "\n".join(
        ("FLEETWATCH_NATS_PASSWORD=wrong-password" if line.startswith("FLEETWATCH_NATS_PASSWORD=") else line)
        for line in good.splitlines()
    )
    ns.path(f"{base}/agent.env").write_text(bad + "\n")
    before = _snapshot(ns, base)
    # A non-root commander: the sudoers line is written, and must be rolled back too.
    r = _run_in(
        ns,
        _install_argv(
            ns,
            f"{base}/agent",
            f"{base}/agent.env",
            fresh_nats.url,
            15,
            ["--components", "collector,commander", "--agent-user", "root", "--commander-user", "nobody"],
        ),
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not connected to NATS" in r.stderr and "rolled back" in r.stderr
    assert "keeps exiting" in r.stderr  # refused at every start: no need to wait out --timeout
    assert "wrong-password" not in r.stdout + r.stderr
    assert _snapshot(ns, base) == before
    # Prerequisites are checked before anything is touched: credentials for another host.
    r = _run_in(
        ns,
        ns.enter(
            [
                sys.executable,
                "-m",
                "fleetwatch",
                "agent",
                "install",
                "--server",
                fresh_nats.url,
                "--host-id",
                "host-b",
                "--credentials",
                f"{base}/agent.env",
                "--prefix",
                f"{base}/agent",
                "--unit-dir",
                UNIT_DIR,
                "--runtime",
                "--offline",
            ]
        ),
    )
    assert r.returncode == 1 and "not 'host-b'" in r.stderr
    assert _snapshot(ns, base) == before


async def test_install_over_tls_right_ca_answers_wrong_ca_rolls_back_at_once(ns, workdir):
    from fleetwatch import certs
    from libs.embedded import NatsServer, free_port, natsconfig
    from libs.runtime import NatsSettings

    root = workdir / f"agent-tls-{uuid.uuid4().hex[:6]}"
    certs.write_all(root / "certs", [], [], [])
    certs.make_ca(root / "other", "some other CA")
    port = free_port()
    tls = natsconfig.ServerSection(
        tls_cert=str(root / "certs" / "nats.crt"),
        tls_key=str(root / "certs" / "nats.key"),
        tls_ca=str(root / "certs" / "ca.crt"),
    )
    creds = natsconfig.write_config(
        natsconfig.Inventory(server=tls, hosts=[natsconfig.InventoryHost(id=HOST)]),
        root / "nats",
        store_dir=str(root / "js"),
        listen=f"127.0.0.1:{port}",
    )
    srv = NatsServer(root / "nats" / "nats.conf", port, log_file=root / "nats.log")
    srv.start()
    url = f"tls://127.0.0.1:{port}"
    base = f"/run/fw-agent-{uuid.uuid4().hex[:6]}"
    try:
        ns.run(["mkdir", "-p", f"{base}/sudoers.d", f"{base}/in"])
        ns.path(f"{base}/in/agent.env").write_text((root / "nats" / "env" / f"agent-{HOST}.env").read_text())
        ns.path(f"{base}/in/ca.crt").write_bytes((root / "certs" / "ca.crt").read_bytes())
        ns.path(f"{base}/in/other-ca.crt").write_bytes((root / "other" / "ca.crt").read_bytes())
        before = _snapshot(ns, base)

        t0 = time.monotonic()
        r = _run_in(
            ns,
            _install_argv(
                ns,
                f"{base}/agent",
                f"{base}/in/agent.env",
                url,
                120,
                ["--components", "collector", "--agent-user", "root", "--tls-ca", f"{base}/in/other-ca.crt"],
            ),
        )
        took = time.monotonic() - t0
        assert r.returncode == 1, r.stdout + r.stderr
        assert "keeps exiting" in r.stderr and "rolled back" in r.stderr
        assert "FLEETWATCH_NATS_TLS_CA" in r.stderr  # the agent's own reason, from its journal
        assert took < 60, f"rolled back after {took:.0f}s, not at once"
        assert _snapshot(ns, base) == before

        r = _run_in(
            ns,
            _install_argv(
                ns,
                f"{base}/agent",
                f"{base}/in/agent.env",
                url,
                30,
                ["--components", "collector", "--agent-user", "root", "--tls-ca", f"{base}/in/ca.crt"],
            ),
        )
        assert r.returncode == 0, r.stdout + r.stderr
        try:
            admin = NatsSettings(url=url, user="admin", password=creds["admin"], tls_ca=str(root / "certs" / "ca.crt"))
            assert await _collector_answers(None, admin)
        finally:
            u = _run_in(
                ns,
                ns.enter(
                    [
                        sys.executable,
                        "-m",
                        "fleetwatch",
                        "agent",
                        "uninstall",
                        "--prefix",
                        f"{base}/agent",
                        "--unit-dir",
                        UNIT_DIR,
                    ]
                ),
            )
        assert u.returncode == 0, u.stdout + u.stderr
        assert _snapshot(ns, base) == before
    finally:
        srv.stop()


def test_sudoers_line_allows_only_systemctl_and_journalctl():
    lines = sudoers_text("fwcmd").splitlines()
    assert lines[0].startswith("#") and len(lines) == 2
    who, rest = lines[1].split(" ALL=(root) NOPASSWD: ")
    assert who == "fwcmd" and [os.path.basename(c.strip()) for c in rest.split(",")] == ["systemctl", "journalctl"]
