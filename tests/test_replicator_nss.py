"""The replicated users as the host sees them: glibc NSS through the Debian libnss-pgsql2 module,
configured with the shipped infra/nss files (laid over /etc by an overlay in a private mount
namespace; the machine's /etc is untouched), reading the replicator's local database."""

from __future__ import annotations

import os
import secrets
import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest

from services.replicator import apply as applier
from services.replicator.source import fetch_active_users
from tests.support.replicator import (
    NSS_MODULE,
    UnixRelay,
    add_user,
    in_nss_namespace,
    real_hash,
    render_nss_configs,
    ssh_password_login,
    two_databases,
    write_sshd_config,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces and the root-only shadow config need root")


@pytest.fixture
async def dbs(pg_cluster):
    async with two_databases(pg_cluster) as d:
        yield d


async def sync(dbs) -> None:
    central = await fetch_active_users(dbs.central_dsn, 10)
    conn = await asyncpg.connect(dbs.local_dsn)
    try:
        await applier.apply(conn, central)
    finally:
        await conn.close()


async def nss_role_passwords(pg_cluster) -> tuple[str, str]:
    pw_nss, pw_shadow = secrets.token_hex(16), secrets.token_hex(16)
    conn = await asyncpg.connect(pg_cluster.dsn("postgres"))
    try:
        # Roles are cluster-wide (created by the replicator's migration); hex passwords need no quoting.
        await conn.execute(f"ALTER ROLE fleetwatch_nss LOGIN PASSWORD '{pw_nss}'")
        await conn.execute(f"ALTER ROLE fleetwatch_nss_shadow LOGIN PASSWORD '{pw_shadow}'")
    finally:
        await conn.close()
    return pw_nss, pw_shadow


@pytest.fixture
async def nss_files(dbs, pg_cluster, workdir):
    assert NSS_MODULE.exists(), "libnss-pgsql2 is not installed (infra/scripts/system-deps.sh installs it)"
    pw_nss, pw_shadow = await nss_role_passwords(pg_cluster)
    d = workdir / f"nss-{uuid.uuid4().hex[:8]}"
    render_nss_configs(
        d / "etc",
        port=pg_cluster.port,
        dbname=dbs.local_dsn.rsplit("/", 1)[1],
        nss_password=pw_nss,
        shadow_password=pw_shadow,
    )
    yield d
    shutil.rmtree(d, ignore_errors=True)


def getent(files: Path, *args: str, as_uid: int | None = None):
    return in_nss_namespace(files / "etc", files / f"stage-{uuid.uuid4().hex[:6]}", ["getent", *args], as_uid=as_uid)


async def test_getent_passwd_and_shadow_follow_the_replica(dbs, nss_files):
    etc_before = {p: p.stat().st_mtime_ns for p in (Path("/etc/nsswitch.conf"),)}
    c = await asyncpg.connect(dbs.central_dsn)
    try:
        hash_a = real_hash("alice's password")
        await add_user(c, "fw_alice", 41001, password_hash=hash_a, shell="/bin/sh")
        await add_user(c, "fw_bob", 41002, gid=41001)
        await sync(dbs)

        r = getent(nss_files, "passwd", "fw_alice")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "fw_alice:x:41001:41001::/home/fw_alice:/bin/sh"
        r = getent(nss_files, "passwd", "41002")  # by uid
        assert r.stdout.startswith("fw_bob:x:41002:41001:"), r
        r = getent(nss_files, "shadow", "fw_alice")
        assert r.returncode == 0, r.stderr
        fields = r.stdout.strip().split(":")
        assert fields[:2] == ["fw_alice", hash_a] and int(fields[2]) > 0
        r = getent(nss_files, "group", "41001")  # the user private group, with fw_bob in it
        assert r.stdout.strip() in ("fw_alice:x:41001:fw_alice,fw_bob", "fw_alice:x:41001:fw_bob,fw_alice"), r
        r = in_nss_namespace(nss_files / "etc", nss_files / "stage-id", ["id", "fw_bob"])  # initgroups path
        assert (
            r.returncode == 0 and r.stdout.strip() == "uid=41002(fw_bob) gid=41001(fw_alice) groups=41001(fw_alice)"
        ), r
        r = getent(nss_files, "passwd")  # enumeration: local files, then the replica
        assert "root:x:0:0" in r.stdout and "fw_alice:x:41001" in r.stdout and "fw_bob:x:41002" in r.stdout

        # An ordinary user resolves names but cannot read hashes (root-only file, no-hash role).
        r = getent(nss_files, "passwd", "fw_alice", as_uid=65534)
        assert r.returncode == 0 and r.stdout.startswith("fw_alice:x:41001"), r
        r = getent(nss_files, "shadow", "fw_alice", as_uid=65534)
        assert r.returncode != 0 and hash_a not in r.stdout

        # Deactivated centrally -> gone from the host after the next sync.
        await c.execute("UPDATE users SET is_active=false WHERE username='fw_alice'")
        assert getent(nss_files, "passwd", "fw_alice").returncode == 0  # not before the sync
        await sync(dbs)
        r = getent(nss_files, "passwd", "fw_alice")
        assert r.returncode == 2 and r.stdout == ""  # 2: key not found
        assert getent(nss_files, "shadow", "fw_alice").returncode == 2
        assert getent(nss_files, "passwd", "fw_bob").returncode == 0
        r = getent(nss_files, "group", "41001")  # the group outlives its namesake, renamed
        assert r.stdout.strip() == "fleet41001:x:41001:fw_bob", r
    finally:
        await c.close()
    # The machine itself never saw any of it.
    assert {p: p.stat().st_mtime_ns for p in etc_before} == etc_before
    assert not Path("/etc/nss-pgsql.conf").exists() and not Path("/etc/nss-pgsql-root.conf").exists()


@pytest.mark.skipif(
    not Path("/usr/sbin/sshd").exists(), reason="going further: needs openssh-server (apt-get install openssh-server)"
)
async def test_sshd_accepts_the_replicated_password_and_refuses_once_deactivated(dbs, pg_cluster, workdir):
    """sshd in its own network namespace, PAM (Debian's stock /etc/pam.d/sshd, pam_unix) reading
    the replicated shadow entry through libnss-pgsql2; the database is reached through a socket
    file relayed to the test cluster, since 127.0.0.1 of the namespace is its own."""
    d = workdir / f"ssh-{uuid.uuid4().hex[:8]}"
    relay = UnixRelay(d / "pg", pg_cluster.port)
    await relay.open()
    c = await asyncpg.connect(dbs.central_dsn)
    try:
        pw_nss, pw_shadow = await nss_role_passwords(pg_cluster)
        render_nss_configs(
            d / "etc",
            port=relay.port,
            dbname=dbs.local_dsn.rsplit("/", 1)[1],
            nss_password=pw_nss,
            shadow_password=pw_shadow,
            socket_dir=str(relay.directory),
        )
        conf = write_sshd_config(d / "sshd")
        await add_user(c, "fw_sshuser", 42001, password_hash=real_hash("s3cure ssh pass"), shell="/bin/sh", home="/tmp")
        await sync(dbs)

        rc, out, err = await ssh_password_login(d / "etc", d / "stage1", conf, "fw_sshuser", "s3cure ssh pass")
        assert rc == 0 and "logged-in-as-fw_sshuser" in out, (rc, out, err)
        rc, out, err = await ssh_password_login(d / "etc", d / "stage2", conf, "fw_sshuser", "wrong password")
        assert rc == 255 and "logged-in" not in out, (rc, out, err)

        await c.execute("UPDATE users SET is_active=false WHERE username='fw_sshuser'")
        await sync(dbs)
        rc, out, err = await ssh_password_login(d / "etc", d / "stage3", conf, "fw_sshuser", "s3cure ssh pass")
        assert rc == 255 and "logged-in" not in out, (rc, out, err)
    finally:
        await c.close()
        await relay.close()
        shutil.rmtree(d, ignore_errors=True)
