"""`fleetwatch agent install|uninstall`: a host's agents (collector, commander, replicator) as
hardened systemd units, installed in one step and rolled back completely when it fails.

    fleetwatch agent install --server tls://nats.example.org:4222 --host-id web-1 \\
        --credentials agent-web-1.env [--tls-ca ca.crt] [--prefix /opt/fleetwatch-agent]
    fleetwatch agent uninstall [--prefix /opt/fleetwatch-agent]

The credentials file is what `fleetwatch nats-config` writes to env/agent-<host>.env, or the
`env` field of the gateway's POST /api/v1/hosts answer. Install:

1. checks prerequisites (root or writable target directories, systemd answering,
   credentials for this host id, not installed already);
2. makes a virtualenv under the prefix and installs the agents into it from the lock
   (requirements/agent.txt, hashes checked), then fleetwatch itself without dependencies
   (`--offline`: a virtualenv that uses this interpreter's packages, for hosts without an index);
3. writes the environment file (0600), one unit per agent and the commander's sudoers line
   (when the commander runs as a non-root `--commander-user`), reloads systemd, starts them;
4. waits until every agent has logged "service ready" (it logs that only once connected to NATS
   and serving), else rolls back everything it changed, in reverse order, and exits 1. An agent
   that keeps exiting (refused credentials, a CA that does not verify the server) ends the wait
   at once, with its last log lines.

Everything it creates is listed in `<prefix>/install-manifest.json`; uninstall undoes exactly that.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from libs.schemas.ids import check_host_id

from .agentfiles import (
    InstallError,
    Journal,
    make_venv,
    mkdir_logged,
    read_env_file,
    run_checked,
    write_new,
)

AGENTS = ("collector", "commander", "replicator")
UNIT_PREFIX = "fleetwatch-agent-"
MANIFEST = "install-manifest.json"
# An agent restarted this often while the install waits will not come up by waiting longer.
MAX_RESTARTS = 2


def unit_name(agent: str) -> str:
    return f"{UNIT_PREFIX}{agent}.service"


def render_unit(
    agent: str, *, prefix: Path, env_file: Path, state_dir: Path, user: str, unit_dir: Path, agent_user: str = "dynamic"
) -> str:
    python = prefix / "venv" / "bin" / "python"
    lines = [
        "[Unit]",
        f"Description=fleetwatch {agent} (host agent)",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={python} -m services.{agent}",
        f"EnvironmentFile={env_file}",
        f"WorkingDirectory={prefix}",
        "Restart=on-failure",
        "RestartSec=2",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
        # Hardening that every agent keeps; the commander needs to write units and run systemctl.
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictRealtime=yes",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    ]
    if agent == "commander":
        lines += [f"User={user}", "ProtectSystem=full", f"ReadWritePaths={state_dir} {unit_dir}"]
        if user != "root":
            lines.append("AmbientCapabilities=")
    else:
        # Collector and replicator need no privilege: a throwaway uid unless an account is named.
        lines += ["DynamicUser=yes"] if agent_user == "dynamic" else [f"User={agent_user}"]
        lines += [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=read-only",
            "PrivateDevices=yes",
            "CapabilityBoundingSet=",
        ]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def sudoers_text(user: str) -> str:
    sc = shutil.which("systemctl") or "/usr/bin/systemctl"
    jc = shutil.which("journalctl") or "/usr/bin/journalctl"
    return f"# fleetwatch commander: drive systemd units (written by fleetwatch agent install)\n{user} ALL=(root) NOPASSWD: {sc}, {jc}\n"


def check_prerequisites(args: argparse.Namespace) -> dict[str, str]:
    # (Python 3.11+ needs no check here: requires-python keeps fleetwatch off older interpreters.)
    problems = []
    if not shutil.which("systemctl"):
        problems.append("systemctl not found: the agents run as systemd units")
    else:
        r = subprocess.run(["systemctl", "is-system-running"], capture_output=True, text=True, timeout=30)
        if r.stdout.strip() not in ("running", "degraded", "starting", "initializing"):
            problems.append(
                f"systemd is not running here (is-system-running: {r.stdout.strip() or r.stderr.strip()!r})"
            )
    for d in (Path(args.unit_dir), Path(args.prefix).parent, Path(args.sudoers_dir)):
        if not os.access(d if d.exists() else d.parent, os.W_OK):
            problems.append(f"{d} is not writable (run as root)")
    if (Path(args.prefix) / MANIFEST).exists():
        problems.append(f"already installed under {args.prefix}: run `fleetwatch agent uninstall` first")
    try:
        host = check_host_id(args.host_id)
    except ValueError as exc:
        problems.append(str(exc))
        host = args.host_id
    creds: dict[str, str] = {}
    try:
        creds = read_env_file(Path(args.credentials))
    except (OSError, InstallError) as exc:
        problems.append(f"credentials: {exc}")
    if creds:
        if not creds.get("FLEETWATCH_NATS_USER") or not creds.get("FLEETWATCH_NATS_PASSWORD"):
            problems.append("credentials: FLEETWATCH_NATS_USER and FLEETWATCH_NATS_PASSWORD are required")
        if creds.get("FLEETWATCH_HOST_ID", host) != host:
            problems.append(f"credentials are for host {creds['FLEETWATCH_HOST_ID']!r}, not {host!r}")
    if args.commander_user != "root":
        import pwd

        try:
            pwd.getpwnam(args.commander_user)
        except KeyError:
            problems.append(f"commander user {args.commander_user!r} does not exist")
    if args.tls_ca and not Path(args.tls_ca).is_file():
        problems.append(f"--tls-ca {args.tls_ca} is not a file")
    if problems:
        raise InstallError("prerequisites not met:\n  - " + "\n  - ".join(problems))
    return creds


def agent_env(args: argparse.Namespace, creds: dict[str, str], prefix: Path) -> str:
    host = check_host_id(args.host_id)
    env = {
        **creds,
        "FLEETWATCH_NATS_URL": args.server,
        "FLEETWATCH_HOST_ID": host,
        "FLEETWATCH_NATS_INBOX_PREFIX": creds.get("FLEETWATCH_NATS_INBOX_PREFIX") or f"_INBOX_{host}",
        "FLEETWATCH_LOG_FORMAT": "json",
        "FLEETWATCH_COMMANDER_STATE_DIR": str(prefix / "state" / "commander"),
        "FLEETWATCH_COMMANDER_UNIT_DIR": str(args.unit_dir),
        "PYTHONUNBUFFERED": "1",
    }
    if args.tls_ca:
        env["FLEETWATCH_NATS_TLS_CA"] = str(Path(args.tls_ca).resolve())
    if args.commander_user != "root":
        env["FLEETWATCH_COMMANDER_USE_SUDO"] = "true"
    for item in args.env:
        k, sep, v = item.partition("=")
        if not sep or not k.startswith("FLEETWATCH_"):
            raise InstallError(f"--env {item!r}: expected FLEETWATCH_NAME=value")
        env[k] = v
    return "".join(f"{k}={v}\n" for k, v in env.items())


def _restarts(unit: str) -> int:
    r = subprocess.run(
        ["systemctl", "show", "-p", "NRestarts", "--value", unit], capture_output=True, text=True, timeout=30
    )
    return int(r.stdout.strip()) if r.stdout.strip().isdigit() else 0


def wait_ready(units: list[str], timeout: float, since: str) -> tuple[list[str], list[str]]:
    """(units without their ready event, those of them that keep exiting), at the deadline or
    as soon as one keeps exiting."""
    deadline = time.monotonic() + timeout
    pending = list(units)
    while pending and time.monotonic() < deadline:
        for u in list(pending):
            r = subprocess.run(
                ["journalctl", "-u", u, "--since", since, "-o", "cat", "--no-pager"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if '"event": "ready"' in r.stdout or '"event":"ready"' in r.stdout:
                pending.remove(u)
        crashing = [u for u in pending if _restarts(u) >= MAX_RESTARTS]
        if crashing:
            return pending, crashing
        if pending:
            time.sleep(0.5)
    return pending, []


def rollback(j: Journal, unit_dir: Path, runtime: bool = False) -> list[str]:
    """Undo in reverse order; returns what could not be undone (reported, never hidden)."""
    left: list[str] = []
    for u in reversed(j.units):
        r = subprocess.run(
            ["systemctl", "disable", "--now", *(["--runtime"] if runtime else []), u],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode != 0 and "not loaded" not in r.stderr and "does not exist" not in r.stderr:
            left.append(f"unit {u}: {r.stderr.strip()[:200]}")
        subprocess.run(["systemctl", "reset-failed", u], capture_output=True, text=True, timeout=30)
    for p in reversed(j.created):
        path = Path(p)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        except OSError as exc:
            left.append(f"{p}: {exc}")
    subprocess.run(["systemctl", "daemon-reload"], capture_output=True, text=True, timeout=60)
    return left


def install(args: argparse.Namespace) -> int:
    creds = check_prerequisites(args)
    prefix = Path(args.prefix)
    unit_dir = Path(args.unit_dir)
    j = Journal()
    agents = [a.strip() for a in args.components.split(",") if a.strip()]
    unknown = [a for a in agents if a not in AGENTS]
    if unknown:
        raise InstallError(f"unknown components {unknown}; choose from {', '.join(AGENTS)}")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - 1))
    try:
        mkdir_logged(prefix, j)
        mkdir_logged(prefix / "etc", j, 0o750)
        mkdir_logged(prefix / "state" / "commander", j, 0o750)
        if args.commander_user != "root":
            import pwd

            pw = pwd.getpwnam(args.commander_user)
            os.chown(prefix / "state" / "commander", pw.pw_uid, pw.pw_gid)
        print(f"creating the virtualenv in {prefix / 'venv'}", flush=True)
        make_venv(prefix, j, args.offline, args.source)
        env_file = prefix / "etc" / "agent.env"
        write_new(env_file, agent_env(args, creds, prefix), j, 0o600)
        if args.commander_user != "root" and "commander" in agents:
            sudoers = Path(args.sudoers_dir) / "fleetwatch-agent"
            write_new(sudoers, sudoers_text(args.commander_user), j, 0o440)
            if shutil.which("visudo"):
                run_checked(["visudo", "-cf", str(sudoers)])
        for a in agents:
            write_new(
                unit_dir / unit_name(a),
                render_unit(
                    a,
                    prefix=prefix,
                    env_file=env_file,
                    state_dir=prefix / "state",
                    user=args.commander_user,
                    unit_dir=unit_dir,
                    agent_user=args.agent_user,
                ),
                j,
            )
        run_checked(["systemctl", "daemon-reload"])
        for a in agents:
            j.units.append(unit_name(a))
            run_checked(["systemctl", "enable", "--now", *(["--runtime"] if args.runtime else []), unit_name(a)])
        print(f"waiting up to {args.timeout:g} s for the agents to answer on NATS", flush=True)
        late, crashing = wait_ready([unit_name(a) for a in agents], args.timeout, since)
        if late:
            for u in late:
                tail = subprocess.run(
                    ["journalctl", "-u", u, "--since", since, "-n", "12", "-o", "cat", "--no-pager"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                ).stdout
                print(f"--- last lines of {u}:\n{tail.strip()[-3000:]}", file=sys.stderr, flush=True)
            why = f"{', '.join(crashing)} keeps exiting" if crashing else f"not all within {args.timeout:g} s"
            raise InstallError(
                f"not connected to NATS ({why}): {', '.join(late)} (check --server, --credentials and --tls-ca; `journalctl -u {late[0]}`)"
            )
        write_new(
            prefix / MANIFEST,
            json.dumps(
                {**j.to_json(), "unit_dir": str(unit_dir), "runtime": args.runtime, "host": args.host_id}, indent=2
            )
            + "\n",
            j,
            0o600,
        )
    except (InstallError, OSError, subprocess.SubprocessError) as exc:
        print(f"install failed: {exc}", file=sys.stderr, flush=True)
        left = rollback(j, unit_dir, args.runtime)
        if left:
            print("rollback could not undo:\n  " + "\n  ".join(left), file=sys.stderr)
        else:
            print("rolled back: nothing of this install is left", file=sys.stderr)
        return 1
    print(f"installed {', '.join(agents)} for host {args.host_id}; all answering on NATS")
    return 0


def uninstall(args: argparse.Namespace) -> int:
    manifest = Path(args.prefix) / MANIFEST
    if not manifest.exists():
        print(f"nothing installed under {args.prefix} (no {MANIFEST})", file=sys.stderr)
        return 1
    data = json.loads(manifest.read_text())
    j = Journal()
    j.created = list(data.get("created", [])) + [str(manifest)]
    j.units = list(data.get("units", []))
    left = rollback(j, Path(data.get("unit_dir", args.unit_dir)), bool(data.get("runtime")))
    if left:
        print("could not remove:\n  " + "\n  ".join(left), file=sys.stderr)
        return 1
    print(f"uninstalled the fleetwatch agents from {args.prefix}")
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    try:
        return install(args)
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="install or uninstall this host's agents as systemd units")
    asub = p.add_subparsers(dest="agent_command", metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prefix", default="/opt/fleetwatch-agent", help="where the virtualenv, config and state go")
    common.add_argument("--unit-dir", default="/etc/systemd/system")
    common.add_argument("--sudoers-dir", default="/etc/sudoers.d")
    i = asub.add_parser("install", parents=[common], help="install, start and check the agents; roll back on failure")
    i.add_argument("--server", required=True, help="NATS URL(s), comma-separated")
    i.add_argument("--host-id", required=True)
    i.add_argument(
        "--credentials",
        required=True,
        help="env file with FLEETWATCH_NATS_USER/PASSWORD (nats-config or POST /api/v1/hosts)",
    )
    i.add_argument("--tls-ca", default="", help="CA certificate of the NATS servers (fleetwatch certs)")
    i.add_argument("--components", default=",".join(AGENTS))
    i.add_argument(
        "--commander-user",
        default="root",
        help="run the commander as this existing user (sudoers line for systemctl/journalctl)",
    )
    i.add_argument(
        "--agent-user", default="dynamic", help="account for collector and replicator (default: a systemd DynamicUser)"
    )
    i.add_argument("--timeout", type=float, default=60.0, help="seconds for every agent to answer on NATS")
    i.add_argument(
        "--offline", action="store_true", help="no package index: the virtualenv uses this interpreter's packages"
    )
    i.add_argument(
        "--source",
        default=None,
        help="fleetwatch source tree or wheel to install (default: this source tree, else the wheel fleetwatch "
        "was installed from, else this release); with --offline, a directory holding the packages",
    )
    i.add_argument(
        "--runtime", action="store_true", help="enable the units until reboot only (links under /run, not /etc)"
    )
    i.add_argument("--env", action="append", default=[], help="extra FLEETWATCH_NAME=value for the agents (repeat)")
    i.set_defaults(func=_cmd_install)
    u = asub.add_parser("uninstall", parents=[common], help="stop and remove everything install created")
    u.set_defaults(func=uninstall)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
