"""FLEETWATCH_COMMANDER_* settings."""

from __future__ import annotations

import msgspec

from libs.runtime import HostSettings, LogSettings, NatsSettings
from libs.schemas.control import DEFAULT_OPERATOR_EXECUTABLES

# Commands no app or job may run, whatever its arguments (matched on the executable's base name).
DEFAULT_DENYLIST = [
    "rm",
    "mkfs",
    "mkfs.ext4",
    "mkfs.xfs",
    "dd",
    "shutdown",
    "reboot",
    "poweroff",
    "halt",
    "init",
    "telinit",
    "wipefs",
    "fdisk",
    "sfdisk",
    "parted",
    "shred",
    "kill",
    "killall",
    "pkill",
    "userdel",
    "passwd",
    "chpasswd",
    "iptables",
    "nft",
    "sh",
    "bash",
    "dash",
    "zsh",
    "su",
    "sudo",
]


class CommanderConfig(msgspec.Struct, kw_only=True, frozen=True):
    nats: NatsSettings = NatsSettings()
    log: LogSettings = LogSettings()
    host: HostSettings = HostSettings()
    # Where app specs, supervised PIDs, app logs and job logs live (`make run` sets it).
    state_dir: str = ".fleetwatch/commander"
    # systemd backend
    unit_dir: str = "/etc/systemd/system"
    unit_prefix: str = "fleetwatch-"
    systemctl: str = "systemctl"
    journalctl: str = "journalctl"
    # Commands for systemctl/journalctl are run as `sudo -n systemctl ...` when not root and set.
    use_sudo: bool = False
    # process backend
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 3
    backoff_jitter: float = 0.2  # ±20 % so programs that failed together do not restart together
    backoff_reset_s: float = 30.0  # uptime after which the backoff starts again from its first step
    # reconciliation and monitoring
    reconcile_interval_s: float = 5.0
    poll_interval_s: float = 0.2
    # safety
    denylist: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_DENYLIST))
    allowlist: list[str] = []  # non-empty: only these executables (base names or full paths)
    rate_per_app_s: float = 1.0  # at most one operation per app per this many seconds
    # The run-as policy where the gateway sends none (services/commander/policy.py): jobs and apps
    # that name no user run as run_as, which must not be root; operators may run these programs
    # (realpath'd) with any arguments, or commands starting with one of these argv prefixes.
    run_as: str = "nobody"
    operator_executables: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_OPERATOR_EXECUTABLES))
    operator_argv_prefixes: list[list[str]] = []
    operator_users: list[str] = []
    # jobs
    job_concurrency: int = 4
    job_max_timeout_s: float = 3600.0
    # logs follow
    follow_max_lease_s: float = 120.0
    follow_batch_interval_s: float = 0.25
