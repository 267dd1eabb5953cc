"""The run-as policy, applied on the host: who a job or an app runs as, and what an operator may run.

Trust: an operator is neither root nor an admin, and a job's output goes back to whoever ran it.
So what an operator starts must not run as root, must not be a shell or an interpreter fed inline
code, and must run as a user that cannot read the host's credentials (the files are 0600 root).

The gateway sends the caller's role and the host's RunPolicy (libs/schemas/control.py) with
jobs.run, jobs.restart and apps.register; only the gateway (and the NATS admin identity) may
publish on fleet.ctl.*, so those fields are the gateway's word. Without a policy the commander's
own default applies (FLEETWATCH_COMMANDER_RUN_AS, _OPERATOR_*); without a role, an operator's rules.

- Everyone: an app or job that names no user runs as run_as, and a run_as that is uid 0 is
  refused: nothing runs as root unless an admin names root.
- Admin: any program, any user, any environment (the host's own denylist and allowlist,
  validate.py, still apply). Audited like every request.
- Operator: no PATH, loader or interpreter-hook variables in env (argv[0] is looked up on the
  commander's own PATH); the user is run_as or one of operator_users, never uid 0; argv[0],
  resolved with realpath, must be an allowlisted executable that does not run code it is given,
  or argv must start with an allowlisted prefix. What runs is that realpath, so neither a copy of
  a shell under an allowed name nor a symlink swapped after the check gets through.
- Viewer: nothing.
"""

from __future__ import annotations

import logging
import os
import pwd

import msgspec
import psutil

from libs.schemas.control import RUNS_CODE_RE, AppSpec, RunPolicy, policy_problems

from .config import CommanderConfig
from .errors import bad, forbidden
from .store import AppRecord
from .validate import Validator

log = logging.getLogger("commander")

# Variables that choose which program runs or what code a program loads: set by an operator, an
# allowlisted program would run their code (LD_PRELOAD=… cat), or a program of theirs (PATH=…).
OPERATOR_ENV_DENIED = frozenset(
    {
        "PATH", "HOME", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "PS4", "IFS", "CDPATH",
        "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONUSERBASE", "PYTHONBREAKPOINT",
        "PERL5LIB", "PERL5OPT", "PERLLIB", "PERL5DB", "RUBYLIB", "RUBYOPT", "NODE_OPTIONS", "NODE_PATH",
        "GCONV_PATH", "LOCPATH", "NLSPATH", "GLIBC_TUNABLES", "HOSTALIASES", "RESOLV_HOST_CONF",
        "XDG_CONFIG_HOME", "XDG_DATA_HOME", "EDITOR", "VISUAL", "PAGER", "MANPAGER",
    }
)  # fmt: skip
OPERATOR_ENV_DENIED_PREFIXES = ("LD_", "DYLD_", "BASH_FUNC_", "GIT_", "MALLOC_")


def _owner(pid: int) -> str:
    try:
        return psutil.Process(pid).username()
    except (psutil.Error, KeyError):
        return ""  # adopt_running answers 404 for a process that is not there


class RunAs:
    def __init__(self, config: CommanderConfig) -> None:
        self.validator = Validator(config.denylist, config.allowlist)
        self.default = RunPolicy(
            run_as=config.run_as,
            executables=list(config.operator_executables),
            argv_prefixes=[list(p) for p in config.operator_argv_prefixes],
            operator_users=list(config.operator_users),
        )

    def _rules(self, role: str, policy: RunPolicy | None) -> tuple[bool, RunPolicy]:
        """(whether the caller is an admin, the policy that applies)."""
        if role == "viewer":
            raise forbidden("a viewer may not run jobs nor register apps")
        if policy is None:
            return role == "admin", self.default
        problems = policy_problems(policy)
        if problems:
            raise bad("the run-as policy sent with this request is not valid: " + "; ".join(problems))
        return role == "admin", policy

    def _user(self, admin: bool, p: RunPolicy, user: str) -> str:
        """The user to run as: the one asked for, or the policy's run_as."""
        default = p.run_as or self.default.run_as
        name = user or default
        try:
            uid = pwd.getpwnam(name).pw_uid
        except KeyError:
            return name  # the validator answers 400 naming the missing user
        if not user and uid == 0:
            raise forbidden(
                f"this host's default run-as user {name!r} is root (uid 0), and nothing runs as root by default: "
                "set a non-root run_as in the host's policy (an admin may name user root for one job or app)"
            )
        if admin:
            return name
        if name != default and name not in p.operator_users:
            allowed = ", ".join(repr(u) for u in [default, *p.operator_users])
            raise forbidden(f"an operator may run jobs and apps as {allowed} only, not as {name!r}")
        if uid == 0:
            raise forbidden(f"an operator's jobs and apps never run as root (user {name!r} is uid 0)")
        return name

    @staticmethod
    def _operator_env(env: dict[str, str]) -> None:
        for k in env:
            if k in OPERATOR_ENV_DENIED or k.startswith(OPERATOR_ENV_DENIED_PREFIXES):
                raise forbidden(
                    f"an operator may not set {k} in the environment: it changes which program or code runs "
                    "(argv[0] is looked up on the commander's own PATH); an admin may"
                )

    @staticmethod
    def _allowed(p: RunPolicy, argv: list[str]) -> list[str]:
        """An operator's validated argv (argv[0] already a path) as it will run: [realpath, *args]."""
        real = os.path.realpath(argv[0])
        for prefix in p.argv_prefixes:
            if argv[1 : len(prefix)] == prefix[1:] and len(argv) >= len(prefix) and os.path.realpath(prefix[0]) == real:
                return [real, *argv[1:]]
        if any(os.path.realpath(e) == real for e in p.executables):
            if RUNS_CODE_RE.match(os.path.basename(real)):
                raise forbidden(
                    f"{argv[0]!r} is {real!r}, which runs whatever code or program it is given: an operator "
                    "may run it only as an argv prefix an admin allowlisted, with what it runs"
                )
            return [real, *argv[1:]]
        raise forbidden(
            f"{argv[0]!r} ({real}) is not a program operators may run on this host; "
            "an admin may run it, or add it to the host's run-as policy"
        )

    def job(
        self, role: str, policy: RunPolicy | None, argv: list[str], cwd: str, user: str, env: dict[str, str]
    ) -> tuple[list[str], str]:
        """(the argv to run, the user to run it as) for jobs.run and jobs.restart, or a refusal."""
        admin, p = self._rules(role, policy)
        if not admin:
            self._operator_env(env)
        name = self._user(admin, p, user)
        full = self.validator.check_job(argv, cwd, name, env)
        return (full if admin else self._allowed(p, full)), name

    def app(
        self, role: str, policy: RunPolicy | None, spec: AppSpec, adopt_pid: int | None
    ) -> tuple[AppSpec, list[str]]:
        """apps.register: the spec as stored (its user filled in, so a restart after a reboot
        needs no policy) and its argv, or a refusal."""
        admin, p = self._rules(role, policy)
        if not admin:
            self._operator_env(spec.env)
        user = spec.user or (_owner(adopt_pid) if adopt_pid is not None else "")  # adopted: as it runs
        spec = msgspec.structs.replace(spec, user=self._user(admin, p, user))
        argv = self.validator.check_spec(spec)
        return spec, (argv if admin else self._allowed(p, argv))

    def argv_of(self, rec: AppRecord) -> list[str]:
        """A registered app's argv when the commander starts. A record stored before apps got a
        user at registration ran as the commander's own (root on most hosts): it gets run_as."""
        if not rec.spec.user:
            rec.spec = msgspec.structs.replace(rec.spec, user=self.default.run_as)
            log.warning("app %s named no user: it runs as %s from now on", rec.spec.name, rec.spec.user)
        return self.validator.argv_of(rec.spec)
