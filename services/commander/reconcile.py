"""Process seen x unit state -> app state (DESIGN §5), as one pure function.

| unit                      | process seen | state    |
|---------------------------|--------------|----------|
| active / reloading        | yes          | running  |
| active, or auto-restart   | no           | crashed  |
| inactive / deactivated    | yes          | zombie   |
| failed                    | -            | failed   |
| activating                | -            | starting |
| deactivating              | -            | stopping |
| inactive                  | no           | stopped  |
| anything else             | -            | unknown  |
"""

from __future__ import annotations


def classify(active_state: str, sub_state: str, process_seen: bool) -> str:
    if active_state == "failed":
        return "failed"
    if active_state in ("active", "reloading"):
        return "running" if process_seen else "crashed"
    if sub_state == "auto-restart":  # the main process died; systemd waits RestartSec to start it again
        return "zombie" if process_seen else "crashed"
    if active_state == "activating":
        return "starting"
    if active_state == "deactivating":
        return "stopping"
    if active_state == "inactive":
        return "zombie" if process_seen else "stopped"
    return "unknown"
