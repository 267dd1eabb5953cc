"""TLS with a self-signed CA from `fleetwatch certs`: nats-server serves it, a client that trusts
that CA connects, a client that trusts another CA is refused, and with `tls_verify` a client
needs a certificate of its own."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys

import nats
import pytest
from cryptography import x509

from fleetwatch import certs
from libs.embedded import NatsServer, free_port, natsconfig
from libs.runtime import NatsSettings, connect
from libs.runtime.natsconn import TlsVerifyError
from tests.conftest import ROOT, service_env

pytestmark = pytest.mark.timeout(90)


def _start_tls_nats(root, cert_dir, verify: bool = False) -> tuple[NatsServer, dict[str, str]]:
    port = free_port()
    server = natsconfig.ServerSection(
        tls_cert=str(cert_dir / "nats.crt"),
        tls_key=str(cert_dir / "nats.key"),
        tls_ca=str(cert_dir / "ca.crt"),
        tls_verify=verify,
    )
    inv = natsconfig.Inventory(server=server, hosts=[natsconfig.InventoryHost(id="web-1")])
    creds = natsconfig.write_config(inv, root / "nats", store_dir=str(root / "js"), listen=f"127.0.0.1:{port}")
    srv = NatsServer(root / "nats" / "nats.conf", port, log_file=root / "nats.log")
    srv.start()
    return srv, creds


def _good_and_other_ca(tmp_path):
    """Certificates from `fleetwatch certs` (good) and an unrelated CA (other)."""
    good = tmp_path / "good"
    certs.write_all(good, [], [], [])
    other = tmp_path / "other"
    certs.make_ca(other, "some other CA")
    return good, other


def _settings(srv: NatsServer, creds, **tls) -> NatsSettings:
    return NatsSettings(
        url=f"tls://127.0.0.1:{srv.port}", user="admin", password=creds["admin"], connect_timeout=3, **tls
    )


async def _refused(settings: NatsSettings, reason: str) -> None:
    """The connection never comes up, and the client saw why (bounded: a refusal must not hang)."""
    errors: list[BaseException] = []

    async def error_cb(e: BaseException) -> None:
        errors.append(e)

    nc = None
    try:
        nc = await asyncio.wait_for(connect(settings, "refused", retry_forever=False, error_cb=error_cb), 8)
    except (TimeoutError, ssl.SSLError, nats.errors.Error, OSError) as exc:
        errors.append(exc)
    assert nc is None or not nc.is_connected, "a client that should be refused got connected"
    assert errors
    if reason:
        assert any(reason in str(e).lower() for e in errors), errors


def test_certs_command_writes_ca_and_leaf_certificates(tmp_path):
    out = tmp_path / "c"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetwatch",
            "certs",
            "--out",
            str(out),
            "--nats-name",
            "nats-1",
            "--gateway-name",
            "ui.example.org",
            "--client",
            "admin",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    nats_crt = x509.load_pem_x509_certificate((out / "nats.crt").read_bytes())
    gw = x509.load_pem_x509_certificate((out / "gateway.crt").read_bytes())
    assert nats_crt.issuer == ca.subject and gw.issuer == ca.subject
    names = nats_crt.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert "nats-1" in names and "localhost" in names
    assert "ui.example.org" in gw.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    for key in ("ca.key", "nats.key", "gateway.key", "client-admin.key"):
        assert (out / key).stat().st_mode & 0o077 == 0, key
    # Re-running keeps the CA (clients keep trusting) and renews the leaves.
    before = (out / "ca.crt").read_bytes()
    r = subprocess.run(
        [sys.executable, "-m", "fleetwatch", "certs", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and (out / "ca.crt").read_bytes() == before


async def test_nats_tls_right_ca_connects_wrong_ca_refused(tmp_path):
    good, other = _good_and_other_ca(tmp_path)
    srv, creds = _start_tls_nats(tmp_path / "srv", good)
    try:
        nc = await connect(_settings(srv, creds, tls_ca=str(good / "ca.crt")), "tls-ok", retry_forever=False)
        sub = await nc.subscribe("tls.ping")
        await nc.publish("tls.ping", b"over tls")
        assert (await sub.next_msg(timeout=5)).data == b"over tls"
        await nc.close()

        await _refused(_settings(srv, creds, tls_ca=str(other / "ca.crt")), "certificate verify failed")

        # Plain text to a TLS-only server is refused too.
        await _refused(
            NatsSettings(url=f"nats://127.0.0.1:{srv.port}", user="admin", password=creds["admin"], connect_timeout=3),
            "",
        )
    finally:
        srv.stop()


async def test_wrong_ca_fails_fast_naming_the_setting_while_absent_server_is_waited_for(tmp_path):
    good, other = _good_and_other_ca(tmp_path)
    srv, creds = _start_tls_nats(tmp_path / "srv", good)
    try:
        # Even when told to retry forever: a certificate that fails verification is final.
        wrong = _settings(srv, creds, tls_ca=str(other / "ca.crt"))
        with pytest.raises(TlsVerifyError) as ei:
            await asyncio.wait_for(connect(wrong, "wrong-ca"), 10)
        assert "FLEETWATCH_NATS_TLS_CA" in str(ei.value) and str(other / "ca.crt") in str(ei.value)

        # A service started with the wrong CA exits with that message instead of hanging.
        env = service_env(
            FLEETWATCH_NATS_URL=wrong.url,
            FLEETWATCH_NATS_USER="admin",
            FLEETWATCH_NATS_PASSWORD=creds["admin"],
            FLEETWATCH_NATS_TLS_CA=str(other / "ca.crt"),
        )
        r = subprocess.run(
            [sys.executable, "-m", "tests.support.echo_service"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 1, r.stderr[-2000:]
        assert "certificate verification failed" in r.stderr and "FLEETWATCH_NATS_TLS_CA" in r.stderr
        assert creds["admin"] not in r.stderr + r.stdout
    finally:
        srv.stop()

    # Nothing listening yet, same TLS settings: still "not up yet", retried until it comes up.
    absent = NatsSettings(url=f"tls://127.0.0.1:{free_port()}", tls_ca=str(good / "ca.crt"), connect_timeout=1)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(connect(absent, "absent"), 3)


async def test_nats_mutual_tls_needs_a_client_certificate(tmp_path):
    d = tmp_path / "c"
    certs.write_all(d, [], [], ["admin"])
    srv, creds = _start_tls_nats(tmp_path / "srv", d, verify=True)
    try:
        await _refused(_settings(srv, creds, tls_ca=str(d / "ca.crt")), "")
        nc = await connect(
            _settings(
                srv,
                creds,
                tls_ca=str(d / "ca.crt"),
                tls_cert=str(d / "client-admin.crt"),
                tls_key=str(d / "client-admin.key"),
            ),
            "mtls",
            retry_forever=False,
        )
        assert nc.is_connected
        await nc.close()
    finally:
        srv.stop()


async def test_gateway_serves_https_with_the_ca_from_fleetwatch_certs(tmp_path, nats_stack, db_dsn):
    import httpx

    from libs.embedded import free_port
    from tests.conftest import service_env

    d = tmp_path / "c"
    certs.write_all(d, [], [], [])
    other = tmp_path / "other"
    certs.make_ca(other, "some other CA")
    port = free_port()
    pw = tmp_path / "admin-password"
    pw.write_text("admin-password-for-tls-test\n")
    env = service_env(
        **nats_stack.env("gateway"),
        FLEETWATCH_DB_DSN=db_dsn,
        FLEETWATCH_GATEWAY_PORT=str(port),
        FLEETWATCH_GATEWAY_TLS_CERT=str(d / "gateway.crt"),
        FLEETWATCH_GATEWAY_TLS_KEY=str(d / "gateway.key"),
        FLEETWATCH_GATEWAY_ADMIN_PASSWORD_FILE=str(pw),
        FLEETWATCH_GATEWAY_HASH_ROUNDS="5000",
    )
    log = open(tmp_path / "gateway.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.gateway"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"https://127.0.0.1:{port}"
    try:
        ok = None
        for _ in range(120):  # bounded: 60 s
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()[-3000:]
            try:
                ok = httpx.get(f"{url}/healthz", verify=ssl.create_default_context(cafile=str(d / "ca.crt")), timeout=2)
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.5)
        assert ok is not None and ok.status_code == 200
        r = httpx.post(
            f"{url}/api/v1/auth/login",
            json={"username": "admin", "password": "admin-password-for-tls-test"},
            verify=ssl.create_default_context(cafile=str(d / "ca.crt")),
            timeout=30,
        )
        assert r.status_code in (200, 201) and r.json()["token"]
        with pytest.raises(httpx.ConnectError) as ei:
            httpx.get(f"{url}/healthz", verify=ssl.create_default_context(cafile=str(other / "ca.crt")), timeout=5)
        assert "CERTIFICATE_VERIFY_FAILED" in str(ei.value)
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).raise_for_status()

        # The image's health check reads the gateway's own settings: HTTPS here, and only with
        # the certificate the gateway is configured to serve.
        probe = [sys.executable, str(ROOT / "infra" / "docker" / "healthcheck.py"), "--gateway"]
        hc_env = {
            "PATH": "/usr/bin:/bin",
            "FLEETWATCH_GATEWAY_HOST": "0.0.0.0",
            "FLEETWATCH_GATEWAY_PORT": str(port),
            "FLEETWATCH_GATEWAY_TLS_CERT": str(d / "gateway.crt"),
        }
        assert subprocess.run(probe, env=hc_env, timeout=30).returncode == 0
        assert subprocess.run(probe, env={**hc_env, "FLEETWATCH_GATEWAY_TLS_CERT": ""}, timeout=30).returncode == 1
        assert (
            subprocess.run(
                probe, env={**hc_env, "FLEETWATCH_GATEWAY_TLS_CERT": str(other / "ca.crt")}, timeout=30
            ).returncode
            == 1
        )
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
