"""THE route table: every route the gateway serves and the least role that may call it.

Adding a resource: write `controllers/<resource>.py` with a Controller, append it to
CONTROLLERS, and add one line per route here. `create_app` refuses to start when a route and
this table disagree, and tests/test_gateway_roles.py walks every route x role from it.
None means public (no token).
"""

from __future__ import annotations

from .controllers import audit, auth, events, history, hosts, processes, stream, system, users

CONTROLLERS = [
    system.SystemController,
    auth.AuthController,
    users.UsersController,
    hosts.HostsController,
    history.HistoryController,
    processes.ProcessesController,
    events.EventsController,
    audit.AuditController,
    stream.StreamController,
]

ROUTE_ROLES: dict[str, str | None] = {
    "GET /": None,
    "GET /healthz": None,
    "GET /readyz": None,
    "GET /metrics": "viewer",
    "POST /api/v1/auth/login": None,
    "GET /api/v1/auth/me": "viewer",
    "GET /api/v1/auth/tokens": "viewer",
    "POST /api/v1/auth/tokens": "viewer",
    "DELETE /api/v1/auth/tokens/{token_id}": "viewer",
    "GET /api/v1/users": "admin",
    "POST /api/v1/users": "admin",
    "GET /api/v1/users/{username}": "admin",
    "PATCH /api/v1/users/{username}": "admin",
    "DELETE /api/v1/users/{username}": "admin",
    "GET /api/v1/hosts": "viewer",
    "GET /api/v1/hosts/{host}": "viewer",
    "GET /api/v1/hosts/{host}/sample": "viewer",
    "GET /api/v1/hosts/{host}/metrics": "viewer",
    "GET /api/v1/hosts/{host}/processes": "viewer",
    "GET /api/v1/hosts/{host}/processes/{pid}/history": "viewer",
    "GET /api/v1/events": "viewer",
    "GET /api/v1/audit": "operator",
    "GET /api/v1/stream": "viewer",
    "WS /api/v1/ws": "viewer",
}
