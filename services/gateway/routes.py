"""THE route table: every route the gateway serves and the least role that may call it.

Adding a resource: write `controllers/<resource>.py` with a Controller, append it to
CONTROLLERS, and add one line per route here. `create_app` refuses to start when a route and
this table disagree, and tests/test_gateway_roles.py walks every route x role from it.
None means public (no token).
"""

from __future__ import annotations

from .controllers import account, alerting, apps, audit, auth, events, history, hosts, jobs, processes, registration, replication, scan, stream, system, users, webhook

CONTROLLERS = [
    system.SystemController,
    auth.AuthController,
    account.AccountController,
    users.UsersController,
    hosts.HostsController,
    history.HistoryController,
    processes.ProcessesController,
    events.EventsController,
    audit.AuditController,
    stream.StreamController,
    apps.AppsController,
    jobs.JobsController,
    scan.ScanController,
    webhook.WebhookController,
    replication.ReplicationController,
    registration.RegistrationController,
    alerting.AlertsController,
    alerting.RulesController,
    alerting.ChecksController,
    alerting.SilencesController,
    alerting.NotifiersController,
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
    "POST /api/v1/auth/password": "viewer",
    "GET /api/v1/users": "admin",
    "POST /api/v1/users": "admin",
    "GET /api/v1/users/{username}": "admin",
    "PATCH /api/v1/users/{username}": "admin",
    "DELETE /api/v1/users/{username}": "admin",
    "GET /api/v1/hosts": "viewer",
    "GET /api/v1/hosts/{host}": "viewer",
    "POST /api/v1/hosts": "admin",
    "DELETE /api/v1/hosts/{host}/registration": "admin",
    "GET /api/v1/hosts/{host}/sample": "viewer",
    "GET /api/v1/hosts/{host}/metrics": "viewer",
    "GET /api/v1/hosts/{host}/processes": "viewer",
    "GET /api/v1/hosts/{host}/processes/{pid}/history": "viewer",
    "GET /api/v1/events": "viewer",
    "GET /api/v1/audit": "operator",
    "GET /api/v1/stream": "viewer",
    "WS /api/v1/ws": "viewer",
    # commander (apps, jobs, scan): viewers read state, operators act, admins register/remove;
    # logs and scans show command lines and output, so they are operator-only.
    "GET /api/v1/hosts/{host}/apps": "viewer",
    "POST /api/v1/hosts/{host}/apps": "admin",
    "GET /api/v1/hosts/{host}/apps/{name}": "viewer",
    "DELETE /api/v1/hosts/{host}/apps/{name}": "admin",
    "POST /api/v1/hosts/{host}/apps/{name}/start": "operator",
    "POST /api/v1/hosts/{host}/apps/{name}/stop": "operator",
    "POST /api/v1/hosts/{host}/apps/{name}/restart": "operator",
    "GET /api/v1/hosts/{host}/apps/{name}/logs": "operator",
    "GET /api/v1/hosts/{host}/apps/{name}/logs/stream": "operator",
    "GET /api/v1/hosts/{host}/jobs": "viewer",
    "POST /api/v1/hosts/{host}/jobs": "operator",
    "POST /api/v1/hosts/{host}/jobs/cleanup": "operator",
    "GET /api/v1/hosts/{host}/jobs/{job_id}": "viewer",
    "POST /api/v1/hosts/{host}/jobs/{job_id}/stop": "operator",
    "POST /api/v1/hosts/{host}/jobs/{job_id}/restart": "operator",
    "GET /api/v1/hosts/{host}/jobs/{job_id}/logs": "operator",
    "GET /api/v1/hosts/{host}/scan": "operator",
    # authenticated by its HMAC signature, not a token
    "POST /api/v1/webhook/command": None,
    # replicator: anyone may see how replication went; running one is an operator's action
    "GET /api/v1/replication": "viewer",
    "GET /api/v1/hosts/{host}/replication": "viewer",
    "POST /api/v1/hosts/{host}/replication/sync": "operator",
    # alerting (the alerter's config API): viewers read, operators edit; secrets are write-only
    "GET /api/v1/alerts": "viewer",
    "GET /api/v1/alerts/history": "viewer",
    "GET /api/v1/rules": "viewer",
    "PUT /api/v1/rules/{name}": "operator",
    "DELETE /api/v1/rules/{name}": "operator",
    "GET /api/v1/checks": "viewer",
    "PUT /api/v1/checks/{name}": "operator",
    "DELETE /api/v1/checks/{name}": "operator",
    "GET /api/v1/silences": "viewer",
    "POST /api/v1/silences": "operator",
    "DELETE /api/v1/silences/{silence_id}": "operator",
    "GET /api/v1/notifiers": "viewer",
    "PUT /api/v1/notifiers/{name}": "operator",
    "DELETE /api/v1/notifiers/{name}": "operator",
    "POST /api/v1/notifiers/{name}/test": "operator",
}
