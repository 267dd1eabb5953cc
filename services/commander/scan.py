"""Running Node.js and Python processes that no app manages yet, so a user can adopt one."""

from __future__ import annotations

import os
from typing import Literal

import psutil

from libs.schemas.control import ScannedProc

MAX_RESULTS = 500


def runtime_of(name: str, cmdline: list[str]) -> Literal["python", "node"] | None:
    exe = os.path.basename(cmdline[0]) if cmdline else name
    for candidate in (exe, name):
        if candidate == "node" or candidate == "nodejs":
            return "node"
        if candidate.startswith("python"):
            return "python"
    return None


# Python's options that take a value (`-W ignore`, `-X dev`): skipped, not read as the script.
_PY_VALUE_OPTS = {"-W", "-X", "--check-hash-based-pycs"}


def split_command(runtime: str, cmdline: list[str]) -> tuple[str, str, str, list[str]]:
    """(interpreter, script, module, args) as an app spec wants them: `python3 -m http.server
    8000` is module http.server with args ["8000"], not a script named http.server."""
    if not cmdline:
        return "", "", "", []
    i = 1
    while i < len(cmdline):
        a = cmdline[i]
        if runtime == "python" and a == "-m" and i + 1 < len(cmdline):
            return cmdline[0], "", cmdline[i + 1], cmdline[i + 2 :]
        if runtime == "python" and a.startswith("-m") and len(a) > 2:  # -mhttp.server
            return cmdline[0], "", a[2:], cmdline[i + 1 :]
        if a == "--" or not a.startswith("-"):
            j = i + 1 if a == "--" else i
            return (cmdline[0], cmdline[j], "", cmdline[j + 1 :]) if j < len(cmdline) else (cmdline[0], "", "", [])
        i += 2 if a in _PY_VALUE_OPTS else 1
    return cmdline[0], "", "", []


def is_fleetwatch(module: str, script: str) -> bool:
    """fleetwatch's own services (`python -m services.collector`, the `fleetwatch` CLI, its
    console scripts) are not apps to adopt."""
    if module.split(".")[0] in ("services", "fleetwatch"):
        return True
    base = os.path.basename(script)
    return base == "fleetwatch" or base.startswith("fleetwatch-")


def listening_ports() -> dict[int, list[int]]:
    ports: dict[int, list[int]] = {}
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return ports
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.pid and c.laddr:
            ports.setdefault(c.pid, []).append(c.laddr.port)
    return ports


def scan(managed_pids: set[int], exclude_pids: set[int]) -> list[ScannedProc]:
    found: list[ScannedProc] = []
    ports = None
    for p in psutil.process_iter(["pid", "name", "cmdline", "username", "create_time", "ppid"]):
        info = p.info
        pid = info["pid"]
        if pid in managed_pids or pid in exclude_pids or info.get("ppid") in managed_pids:
            continue
        cmdline = list(info.get("cmdline") or [])
        rt = runtime_of(info.get("name") or "", cmdline)
        if rt is None:
            continue
        interpreter, script, module, args = split_command(rt, cmdline)
        if is_fleetwatch(module, script):
            continue
        if ports is None:
            ports = listening_ports()
        try:
            cwd = p.cwd()
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            cwd = ""
        found.append(
            ScannedProc(
                pid=pid,
                runtime=rt,
                cmdline=cmdline,
                cwd=cwd,
                user=info.get("username") or "",
                ports=sorted(set(ports.get(pid, []))),
                create_time=info.get("create_time") or 0.0,
                interpreter=interpreter,
                script=script,
                module=module,
                args=args,
            )
        )
        if len(found) >= MAX_RESULTS:
            break
    return found
