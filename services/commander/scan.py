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
        rt = runtime_of(info.get("name") or "", info.get("cmdline") or [])
        if rt is None:
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
                cmdline=list(info.get("cmdline") or []),
                cwd=cwd,
                user=info.get("username") or "",
                ports=sorted(set(ports.get(pid, []))),
                create_time=info.get("create_time") or 0.0,
            )
        )
        if len(found) >= MAX_RESULTS:
            break
    return found
