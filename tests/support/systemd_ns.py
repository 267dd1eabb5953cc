"""A real systemd, booted as PID 1 of a private PID + mount (+ UTS, cgroup) namespace.

For tests that need systemctl/journalctl to answer (the commander's systemd backend, agent
install tests). Safety, in order of what could hurt the machine:

- Inside the namespace, private tmpfs are mounted on /tmp, /run, /var/tmp, /var/log/journal and
  /var/lib/systemd BEFORE systemd starts, so systemd-tmpfiles and the journal never touch the
  machine's own directories. Only the code this test run executes (the checkout, the virtualenv,
  the interpreter: `code_paths()`) is bound back at its own path when it lives under one of them
  (a checkout in a `mktemp -d` folder), and units, whose PrivateTmp= hides /tmp, get it too.
- systemd boots `basic.target` only (never multi-user.target, where PostgreSQL and friends are
  enabled), with `container=` set, and units that act on the whole kernel or on persistent state
  (sysctl, modules, swap, timers, udev, sysusers, tmpfiles, clock sync...) are masked by symlinks in
  the private /run/systemd/system.
- systemd gets a cgroup namespace rooted in a fresh cgroup of its own, so it cannot reorganise the
  machine's cgroup tree; the cgroup is removed on teardown.
- Teardown SIGKILLs the namespace's PID 1: the kernel kills every process in the namespace and
  the private mounts disappear with it.

Use:

    with SystemdNamespace() as ns:
        ns.run(["systemctl", "is-system-running"])
        ns.path("/run/systemd/system/x.service").write_text(...)   # a file inside the namespace
        subprocess.Popen(ns.enter(["python", "-m", ...]))           # a process inside it
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

SYSTEMD = "/lib/systemd/systemd"

# Units that would touch the kernel or persistent state outside the namespace, or are useless in it.
MASKED = [
    "timers.target",
    "swap.target",
    "getty.target",
    "cryptsetup.target",
    "integritysetup.target",
    "veritysetup.target",
    "remote-fs.target",
    "systemd-timesyncd.service",
    "systemd-pstore.service",
    "systemd-sysctl.service",
    "systemd-modules-load.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-firstboot.service",
    "systemd-machine-id-commit.service",
    "systemd-sysusers.service",
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.service",
    "systemd-random-seed.service",
    "systemd-update-utmp.service",
    "systemd-repart.service",
    "systemd-pcrphase.service",
    "systemd-pcrphase-sysinit.service",
    "kmod-static-nodes.service",
    "systemd-journal-flush.service",
    "systemd-remount-fs.service",
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-hwdb-update.service",
    "systemd-fsck-root.service",
    "ldconfig.service",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    "systemd-ask-password-console.path",
    "systemd-ask-password-wall.path",
    "e2scrub_reap.service",
    "postgresql.service",
]

PRIVATE_TMPFS = ["/tmp", "/run", "/var/tmp", "/var/log/journal", "/var/lib/systemd"]
# What systemd's PrivateTmp=yes replaces in a unit's view of the namespace.
UNIT_PRIVATE_TMP = ["/tmp", "/var/tmp"]
# The drop-in that lends every fleetwatch unit (fleetwatch-<app>, fleetwatch-agent-*: systemd's
# prefix drop-ins) the code paths its PrivateTmp= hides; the units themselves stay as written.
CODE_DROPIN = "/run/systemd/system/fleetwatch-.service.d/50-test-code-paths.conf"


def code_paths() -> list[str]:
    """The directories a Python process started by this test run reads code from: the checkout,
    the virtualenv, the interpreter's installation, and every directory on sys.path; real paths,
    outermost only (one inside another comes along with it)."""
    root = Path(__file__).resolve().parents[2]
    found = {root, sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, *filter(None, sys.path)}
    found.add(os.path.dirname(os.path.realpath(sys.executable)))
    dirs = sorted({os.path.realpath(p) for p in found if os.path.isdir(p)})
    return [d for d in dirs if not any(_under(d, o) for o in dirs)]


def _under(path: str, top: str) -> bool:
    """`path` lies strictly inside `top`."""
    return path != top and path.startswith(top.rstrip("/") + "/")


def _overmount_keeping(mounts: list[tuple[str, str]], keep: list[str]) -> list[str]:
    """sh lines that mount each (directory, tmpfs options) of `mounts`, then bind every `keep`
    path they would hide back at its own path, on directories mkdir makes 0755. Each kept path
    is held open (fd 3..9) before the tmpfs covers it: its only name left afterwards is
    /proc/self/fd/N, which mount must not canonicalize (that name now resolves into the tmpfs)."""
    hidden = [k for k in keep if any(_under(k, d) for d, _ in mounts)]
    if len(hidden) > 7:
        raise RuntimeError(f"more code paths to keep than sh has spare fds: {hidden}")
    held = list(enumerate(hidden, start=3))
    lines = [f"exec {fd}<{shlex.quote(k)}" for fd, k in held]
    for d, opts in mounts:
        lines.append(f"mkdir -p {shlex.quote(d)} && mount -t tmpfs -o {opts} tmpfs {shlex.quote(d)}")
    for fd, k in held:
        q = shlex.quote(k)
        lines.append(f"mkdir -p {q} && mount --no-canonicalize --rbind /proc/self/fd/{fd} {q}")
    lines += [f"exec {fd}<&-" for fd, _ in held]
    return lines


def _search_blocker(path: str) -> str | None:
    """The outermost ancestor of `path` that other users may not search (no o+x), if any."""
    parts = Path(path).parts
    for i in range(2, len(parts)):
        d = os.path.join(*parts[:i])
        try:
            if not os.stat(d).st_mode & 0o001:
                return d
        except OSError:
            return None
    return None


def reachable_prefix(paths: list[str] | None = None) -> list[str]:
    """argv prefix that runs the rest in a private mount namespace where every code path (default
    `code_paths()`) is reachable by any user, for a process dropped to another user (`nobody`):
    a checkout in a `mktemp -d` folder (0700), an interpreter under /root, are otherwise out of
    its reach. The outermost ancestor others cannot search is covered by a 0755 tmpfs and the
    code path bound back on it; nothing on the machine changes mode. [] when nothing is in the way
    (or when this is not root, who alone could switch users anyway)."""
    keep = code_paths() if paths is None else paths
    blockers = sorted({b for b in map(_search_blocker, keep) if b})
    blockers = [b for b in blockers if not any(_under(b, o) for o in blockers)]
    if not blockers or os.geteuid() != 0 or not shutil.which("unshare"):
        return []
    lines = ["set -e", *_overmount_keeping([(b, "mode=0755,size=1m") for b in blockers], keep), 'exec "$@"']
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(lines), "sh"]


def available() -> str:
    """'' when a namespace can be booted here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (unshare of PID/mount namespaces)"
    for tool in ("unshare", "nsenter"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    if not os.path.exists(SYSTEMD):
        return f"{SYSTEMD} is not installed (infra/scripts/system-deps.sh installs systemd)"
    if _unified_root() is None:
        return "no cgroup2 hierarchy mounted"
    return ""


def _unified_root() -> Path | None:
    for p in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(p, "cgroup.procs")) and os.path.exists(os.path.join(p, "cgroup.controllers")):
            return Path(p)
    return None


def _inner_script(masked: list[str], keep: list[str]) -> str:
    lines = [
        "set -e",
        "mount --make-rprivate /",
        # The private tmpfs hide the machine's /tmp, but not the code the tests run inside.
        *_overmount_keeping([(d, "mode=1777") for d in PRIVATE_TMPFS], keep),
    ]
    lines += [
        "chmod 755 /run",
        # /sys read-only keeps udev-like units off the machine's devices; cgroup2 is remounted
        # rw on top, showing only this namespace's cgroup (the cgroup namespace's root).
        "umount -l /sys/fs/cgroup 2>/dev/null || true",
        "mount -o remount,bind,ro /sys",
        "mount -t cgroup2 cgroup2 /sys/fs/cgroup",
        "mkdir -p /run/systemd/system",
    ]
    for u in masked:
        lines.append(f"ln -sf /dev/null /run/systemd/system/{u}")
    lent = [k for k in keep if any(_under(k, d) for d in UNIT_PRIVATE_TMP)]
    if lent:
        # "-": a path gone from the namespace does not fail the unit. Read-only, like the code
        # a unit runs from any other location under ProtectSystem=.
        binds = " ".join('"-' + k.replace("\\", "\\\\").replace('"', '\\"') + '"' for k in lent)
        lines += [
            f"mkdir -p {shlex.quote(os.path.dirname(CODE_DROPIN))}",
            f"printf '%s\\n' '[Service]' {shlex.quote('BindReadOnlyPaths=' + binds)} > {shlex.quote(CODE_DROPIN)}",
        ]
    lines.append(
        f"exec env -i container=fleetwatch-test PATH=/usr/sbin:/usr/bin:/sbin:/bin {SYSTEMD} --unit=basic.target --log-target=console --show-status=no"
    )
    return "\n".join(lines)


class SystemdNamespace:
    def __init__(
        self, boot_timeout: float = 60.0, extra_masked: list[str] | None = None, log_path: Path | None = None
    ) -> None:
        self.boot_timeout = boot_timeout
        self.masked = MASKED + list(extra_masked or [])
        self.keep = code_paths()
        self.log_path = log_path
        self.cgroup: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.pid: int = 0  # systemd's PID as the machine sees it
        self._log = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> SystemdNamespace:
        why = available()
        if why:
            raise RuntimeError(f"cannot boot systemd in a namespace: {why}")
        root = _unified_root()
        assert root is not None
        self.cgroup = root / f"fleetwatch-ns-{uuid.uuid4().hex[:8]}"
        self.cgroup.mkdir()
        cg_procs = str(self.cgroup / "cgroup.procs")

        def enter_cgroup() -> None:  # runs in the child before exec: cgroup first, then namespaces
            with open(cg_procs, "w") as f:
                f.write(str(os.getpid()))

        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._log = out if self.log_path else None
        self.proc = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--pid",
                "--uts",
                "--ipc",
                "--cgroup",
                "--fork",
                "--mount-proc",
                "sh",
                "-c",
                _inner_script(self.masked, self.keep),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            preexec_fn=enter_cgroup,
            start_new_session=True,
        )
        try:
            self.pid = self._find_init()
            self._wait_running()
        except BaseException:
            self.stop()
            raise
        return self

    def _find_init(self) -> int:
        """The forked child of unshare becomes PID 1 of the namespace and execs systemd."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"namespace setup failed (exit {self.proc.returncode}); see {self.log_path or 'log_path'}"
                )
            try:
                children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            except OSError:
                children = []
            for c in children:
                try:
                    if os.readlink(f"/proc/{c}/exe").endswith("/systemd"):
                        return int(c)
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("systemd did not start inside the namespace")

    def _wait_running(self) -> None:
        deadline = time.monotonic() + self.boot_timeout
        state = ""
        while time.monotonic() < deadline:
            r = self.run(["systemctl", "is-system-running"], check=False, timeout=10)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"systemd in the namespace did not finish booting (state {state!r})")

    def stop(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)  # PID 1 of the namespace: the kernel kills the rest
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.cgroup is not None:
            self._remove_cgroup(self.cgroup)
            self.cgroup = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.pid = 0

    @staticmethod
    def _remove_cgroup(cg: Path) -> None:
        deadline = time.monotonic() + 10
        while cg.exists() and time.monotonic() < deadline:
            for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                try:
                    d.rmdir()
                except OSError:
                    pass
            try:
                cg.rmdir()
            except OSError:
                time.sleep(0.1)

    def __enter__(self) -> SystemdNamespace:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- working inside ----------------------------------------------------------------------
    def enter(self, argv: list[str]) -> list[str]:
        """argv prefixed so that it runs inside the namespace (its mounts, its PIDs)."""
        return ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "-C", "--", *argv]

    def run(self, argv: list[str], check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.enter(argv), capture_output=True, text=True, check=check, timeout=timeout, **kw)

    def path(self, p: str) -> Path:
        """A path inside the namespace, reachable from outside (through systemd's root)."""
        return Path(f"/proc/{self.pid}/root") / p.lstrip("/")
