"""Checks a spec or a job before anything runs: paths, user, env names, deny/allow lists."""

from __future__ import annotations

import os
import pwd
import re
import shutil

from libs.schemas.control import AppSpec, BinaryRun, NodeRun, PythonRun
from libs.schemas.ids import NAME_RE

from .errors import bad, forbidden

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
MAX_ARGS = 256
MAX_ARG_LEN = 8192
# Whole command line and whole environment, in UTF-8 bytes (each string plus its terminator, as
# execve counts them). Per-argument limits alone let 256 x 8 KiB = 2 MiB through, and every
# listing, status and audit record that carries the argv then carries that.
MAX_ARGV_BYTES = 128 * 1024
MAX_ENV_BYTES = 64 * 1024


class Validator:
    def __init__(self, denylist: list[str], allowlist: list[str]) -> None:
        self.denylist = {d.strip() for d in denylist if d.strip()}
        self.allowlist = {a.strip() for a in allowlist if a.strip()}

    def resolve_executable(self, exe: str, cwd: str = "", env_path: str | None = None) -> str:
        if not exe:
            raise bad("the command is empty")
        if "/" in exe:
            path = exe if os.path.isabs(exe) else os.path.join(cwd or os.getcwd(), exe)
            if not os.path.isfile(path):
                raise bad(f"executable {exe!r} does not exist")
            if not os.access(path, os.X_OK):
                raise bad(f"executable {exe!r} is not executable")
            return os.path.abspath(path)
        found = shutil.which(exe, path=env_path)
        if not found:
            raise bad(f"executable {exe!r} is not on PATH")
        return found

    def check_command(self, exe_path: str, given: str) -> None:
        names = {os.path.basename(exe_path), os.path.basename(given), os.path.basename(os.path.realpath(exe_path))}
        denied = names & self.denylist
        if denied:
            raise bad(f"command {sorted(denied)[0]!r} is on the denylist of destructive commands")
        if self.allowlist and not (names | {exe_path, os.path.realpath(exe_path)}) & self.allowlist:
            raise forbidden(f"command {os.path.basename(exe_path)!r} is not on this host's allowlist")

    def check_args(self, args: list[str]) -> None:
        if len(args) > MAX_ARGS:
            raise bad(f"too many arguments ({len(args)} > {MAX_ARGS})")
        for a in args:
            if len(a) > MAX_ARG_LEN or "\x00" in a:
                raise bad("an argument is too long or contains a NUL byte")

    @staticmethod
    def check_sizes(argv: list[str], env: dict[str, str]) -> None:
        size = sum(len(a.encode()) + 1 for a in argv)
        if size > MAX_ARGV_BYTES:
            raise bad(f"the command line is {size} bytes; at most {MAX_ARGV_BYTES} are accepted")
        size = sum(len(k.encode()) + len(v.encode()) + 2 for k, v in env.items())
        if size > MAX_ENV_BYTES:
            raise bad(f"the environment is {size} bytes; at most {MAX_ENV_BYTES} are accepted")

    @staticmethod
    def check_user(user: str) -> None:
        if not user:
            return
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise bad(f"user {user!r} does not exist on this host") from None
        if user != pwd.getpwuid(os.geteuid()).pw_name and os.geteuid() != 0:
            raise forbidden(
                f"the commander runs as {pwd.getpwuid(os.geteuid()).pw_name!r} and cannot switch to user {user!r}; run it as root"
            )

    @staticmethod
    def check_cwd(cwd: str) -> None:
        if cwd and any(ord(c) < 32 for c in cwd):
            raise bad("working directory contains control characters")
        if cwd and not os.path.isdir(cwd):
            raise bad(f"working directory {cwd!r} does not exist")
        if cwd and not os.path.isabs(cwd):
            raise bad(f"working directory {cwd!r} must be an absolute path")

    @staticmethod
    def check_env(env: dict[str, str]) -> None:
        for k, v in env.items():
            if not ENV_NAME_RE.match(k):
                raise bad(
                    f"environment variable name {k!r} is not valid (letters, digits and _, not starting with a digit)"
                )
            if "\x00" in v:
                raise bad(f"environment variable {k!r} contains a NUL byte")

    def argv_of(self, spec: AppSpec) -> list[str]:
        """The full argv of an app after validation; argv[0] resolved to a path."""
        run = spec.run
        path = spec.env.get("PATH")
        if isinstance(run, PythonRun) and run.module:
            if run.script:
                raise bad("give a script or a module, not both")
            if not MODULE_RE.match(run.module):
                raise bad(f"module {run.module[:100]!r} is not a dotted Python module name")
            exe = self.resolve_executable(run.interpreter, spec.cwd, path)
            self.check_command(exe, run.interpreter)
            self.check_args(run.args)
            self.check_sizes([exe, "-m", run.module, *run.args], spec.env)
            return [exe, "-m", run.module, *run.args]
        if isinstance(run, (PythonRun, NodeRun)):
            script = run.script
            if not script:
                raise bad("the script path is empty")
            full = script if os.path.isabs(script) else os.path.join(spec.cwd or "/", script)
            if not os.path.isfile(full):
                raise bad(f"script {script!r} does not exist")
            exe = self.resolve_executable(run.interpreter, spec.cwd, path)
            self.check_command(exe, run.interpreter)
            self.check_args(run.args)
            self.check_sizes([exe, full, *run.args], spec.env)
            return [exe, full, *run.args]
        assert isinstance(run, BinaryRun)
        if not run.argv:
            raise bad("argv is empty")
        exe = self.resolve_executable(run.argv[0], spec.cwd, path)
        self.check_command(exe, run.argv[0])
        self.check_args(run.argv[1:])
        self.check_sizes(run.argv, spec.env)
        return [exe, *run.argv[1:]]

    def check_spec(self, spec: AppSpec) -> list[str]:
        if not NAME_RE.match(spec.name):
            raise bad(f"app name {spec.name!r} is not valid: 1-64 characters of [A-Za-z0-9_-]")
        self.check_cwd(spec.cwd)
        self.check_user(spec.user)
        self.check_env(spec.env)
        if spec.max_retries < 0 or spec.min_uptime_s < 0 or spec.backoff_s < 0 or spec.stop_timeout_s <= 0:
            raise bad("max_retries, min_uptime_s and backoff_s must be >= 0 and stop_timeout_s > 0")
        return self.argv_of(spec)

    def check_job(self, argv: list[str], cwd: str, user: str, env: dict[str, str]) -> list[str]:
        if not argv:
            raise bad("argv is empty")
        # Before anything looks at the strings: cheap, and the refusal names the real problem.
        self.check_sizes(argv, env)
        self.check_cwd(cwd)
        self.check_user(user)
        self.check_env(env)
        exe = self.resolve_executable(argv[0], cwd, env.get("PATH"))
        self.check_command(exe, argv[0])
        self.check_args(argv[1:])
        return [exe, *argv[1:]]
