"""`fleetwatch certs`: a private CA and the certificates NATS and the gateway serve with.

    fleetwatch certs --out secrets/certs --nats-name nats-1 --nats-name nats-2 --gateway-name ui.example.org

writes `ca.crt` (give it to every client), `ca.key`, `nats.crt`/`nats.key` (every NATS node
serves the same one; its names cover all of them), `gateway.crt`/`gateway.key` and, per
`--client NAME`, `client-NAME.crt`/`.key` for mutual TLS. Keys are 0600. An existing CA in the
output directory is reused, so re-running renews the leaf certificates without touching clients.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


class Issuer:
    """A CA certificate and its key, loaded or made."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)


def make_ca(out: Path, common_name: str = "fleetwatch CA", days: int = 3650) -> Issuer:
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetwatch"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(out / "ca.key", key)
    _write_cert(out / "ca.crt", cert)
    return Issuer(cert, key)


def load_or_make_ca(out: Path, days: int = 3650) -> Issuer:
    crt, key = out / "ca.crt", out / "ca.key"
    if crt.exists() and key.exists():
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        pkey = serialization.load_pem_private_key(key.read_bytes(), password=None)
        return Issuer(cert, pkey)  # type: ignore[arg-type]
    return make_ca(out, days=days)


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for n in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def issue(
    ca: Issuer, out: Path, stem: str, names: list[str], *, client: bool = False, days: int = 825
) -> tuple[Path, Path]:
    """A leaf certificate signed by `ca`: server (with names as SANs) or client. Returns (crt, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usage = (
        [ExtendedKeyUsageOID.CLIENT_AUTH]
        if client
        else [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else stem)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if names:
        b = b.add_extension(_san(names), critical=False)
    cert = b.sign(ca.key, hashes.SHA256())
    crt_path, key_path = out / f"{stem}.crt", out / f"{stem}.key"
    _write_key(key_path, key)
    _write_cert(crt_path, cert)
    return crt_path, key_path


def write_all(
    out: Path, nats_names: list[str], gateway_names: list[str], clients: list[str], days: int = 825
) -> dict[str, Path]:
    ca = load_or_make_ca(out)
    written = {"ca": out / "ca.crt"}
    written["nats"], _ = issue(ca, out, "nats", list(DEFAULT_NAMES) + nats_names, days=days)
    written["gateway"], _ = issue(ca, out, "gateway", list(DEFAULT_NAMES) + gateway_names, days=days)
    for c in clients:
        written[f"client-{c}"], _ = issue(ca, out, f"client-{c}", [c], client=True, days=days)
    return written


def _cmd(args: argparse.Namespace) -> int:
    out = Path(args.out)
    written = write_all(out, args.nats_name, args.gateway_name, args.client, days=args.days)
    for what, path in written.items():
        print(f"{what}: {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certs", help="make a CA and TLS certificates for NATS and the gateway")
    p.add_argument("--out", default="certs", help="output directory (default: ./certs); an existing CA there is reused")
    p.add_argument(
        "--nats-name", action="append", default=[], help="a DNS name or IP the NATS nodes are reached by (repeat)"
    )
    p.add_argument(
        "--gateway-name", action="append", default=[], help="a DNS name or IP the gateway is reached by (repeat)"
    )
    p.add_argument(
        "--client", action="append", default=[], help="also issue a client certificate for mutual TLS (repeat)"
    )
    p.add_argument("--days", type=int, default=825, help="validity of the leaf certificates")
    p.set_defaults(func=_cmd)
