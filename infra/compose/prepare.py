"""Generate what central.yml and agent.yml read from secrets/ (never committed):

    secrets/nats-1.conf … nats-3.conf   cluster node configs (fleetwatch nats-config)
    secrets/credentials.json, env/*.env  one NATS identity per service and per host agent
    secrets/certs/                       CA + NATS and gateway certificates (fleetwatch certs)
    secrets/postgres.env, db.env         the database password, and the DSN the services use
    secrets/gateway.env, admin-password  the gateway's signing key and first admin password

Running it again keeps every existing secret and only adds what is missing.

    python infra/compose/prepare.py [--inventory inventory.toml] [--out secrets] [--gateway-name ui.example.org]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from fleetwatch import certs  # noqa: E402
from libs.embedded import natsconfig  # noqa: E402


def _private(path: Path, text: str) -> None:
    if path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line) if path.exists() else {}


def prepare(inventory: Path, out: Path, gateway_names: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    inv = natsconfig.load_inventory(inventory)
    natsconfig.write_config(inv, out)
    node_names = [n.name for n in inv.server.nodes]
    cert_dir = out / "certs"
    if not (cert_dir / "nats.crt").exists():
        certs.write_all(cert_dir, node_names, ["gateway", *gateway_names], [])
    db_pw = _read_env(out / "postgres.env").get("POSTGRES_PASSWORD") or secrets.token_urlsafe(24)
    _private(out / "postgres.env", f"POSTGRES_USER=fleetwatch\nPOSTGRES_PASSWORD={db_pw}\nPOSTGRES_DB=fleetwatch\n")
    _private(out / "db.env", f"FLEETWATCH_DB_DSN=postgresql://fleetwatch:{db_pw}@timescaledb:5432/fleetwatch\n")
    _private(out / "gateway.env", f"FLEETWATCH_GATEWAY_SECRET_KEY={secrets.token_urlsafe(32)}\n")
    _private(out / "admin-password", secrets.token_urlsafe(18) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inventory", default=str(HERE / "inventory.toml"))
    p.add_argument("--out", default=os.environ.get("FLEETWATCH_SECRETS", str(HERE / "secrets")))
    p.add_argument("--gateway-name", action="append", default=[])
    a = p.parse_args(argv)
    prepare(Path(a.inventory), Path(a.out), a.gateway_name)
    print(f"secrets written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
