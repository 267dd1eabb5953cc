"""Starting a process-backend app: its environment, its user, and its output through logtee.

The app's stdout and stderr are two pipes read by a logtee process (services/commander/logtee.py)
that stamps each line with the time it was written and its stream; both start in sessions of
their own, so they outlive the commander and a stop of the app's process group spares the tee
(it ends by itself when the app's pipes close).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

from libs.schemas.control import AppSpec, NodeRun, PythonRun

from . import logfiles

# the tee runs as `-m services.commander.logtee` from the directory holding `services`, so it is
# this checkout's, and procs.scan knows it for fleetwatch's own (scan.is_fleetwatch)
_ROOT = Path(__file__).resolve().parents[2]


def child_env(spec: AppSpec) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    if spec.user:
        pw = pwd.getpwnam(spec.user)
        env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    else:
        env["HOME"] = os.environ.get("HOME", "/")
    if isinstance(spec.run, PythonRun):
        env["PYTHONUNBUFFERED"] = "1"  # lines reach the log file as they are printed
    if isinstance(spec.run, NodeRun):
        env["NODE_ENV"] = "production"
    env.update(spec.env)
    return env


def spawn(argv: list[str], spec: AppSpec, log_path: Path) -> subprocess.Popen:
    """Start logtee, then the app writing into it; OSError when the app cannot start."""
    env = child_env(spec)
    kw: dict = {}
    if spec.user:
        pw = pwd.getpwnam(spec.user)
        if pw.pw_uid != os.geteuid():
            kw.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    log_fd = logfiles.open_for_child(log_path)  # here, so a log that cannot be written fails the start
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        tee = subprocess.Popen(
            [sys.executable, "-m", "services.commander.logtee", str(err_r)],
            cwd=_ROOT,
            stdin=out_r,
            stdout=log_fd,
            stderr=subprocess.DEVNULL,
            pass_fds=(err_r,),
            start_new_session=True,
        )
        os.close(out_r)
        os.close(err_r)
        out_r = err_r = -1
        # `tee` is not waited for: it ends with the app, maybe after this commander; subprocess
        # reaps it once it has (a Popen dropped while running is polled at the next Popen)
        del tee
        return subprocess.Popen(
            argv,
            cwd=spec.cwd or None,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            start_new_session=True,
            close_fds=True,
            **kw,
        )
    finally:
        for fd in (log_fd, out_r, err_r, out_w, err_w):
            if fd >= 0:
                os.close(fd)
