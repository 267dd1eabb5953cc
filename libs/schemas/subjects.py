"""Every subject fleetwatch uses, defined once. Namespace first, identifiers last."""

from __future__ import annotations

from .ids import check_host_id, check_name

ROOT = "fleet"

# Wildcards used by stream definitions, consumers and permissions.
METRICS_ALL = "fleet.metrics.*"
PROCS_ALL = "fleet.procs.*"
HOSTS_ALL = "fleet.hosts.*"
APPS_ALL = "fleet.apps.*"
HEALTH_ALL = "fleet.health.*"
ALERTS_ALL = "fleet.alerts.*.*"
AUDIT_ALL = "fleet.audit.*"
REPLICA_ALL = "fleet.replica.*"
USERS_CHANGED = "fleet.users.changed"
# Dead letters of central services (`fleet.deadletter.<service>`) and of host agents
# (`fleet.deadletter.<kind>.<host>`): two streams, so an agent's quarantine has its own limits.
DEADLETTER_ALL = "fleet.deadletter.*"
AGENT_DEADLETTER_ALL = "fleet.deadletter.*.*"
# Alerting configuration and state, request/reply: fleet.alerting.<resource>.<verb>.
ALERTING_ALL = "fleet.alerting.>"


def metrics(host: str) -> str:
    return f"fleet.metrics.{check_host_id(host)}"


def procs(host: str) -> str:
    return f"fleet.procs.{check_host_id(host)}"


def sample(host: str) -> str:
    """Request -> a fresh MetricFrame from that host's collector (core NATS)."""
    return f"fleet.sample.{check_host_id(host)}"


def hosts(host: str) -> str:
    return f"fleet.hosts.{check_host_id(host)}"


def apps(host: str) -> str:
    return f"fleet.apps.{check_host_id(host)}"


def ctl(host: str, verb: str = "") -> str:
    """`fleet.ctl.<host>` or `fleet.ctl.<host>.<verb>` (verb like `apps.start`)."""
    base = f"fleet.ctl.{check_host_id(host)}"
    return f"{base}.{verb}" if verb else base


def logs(host: str, app: str) -> str:
    return f"fleet.logs.{check_host_id(host)}.{check_name(app, 'app name')}"


def health(check: str) -> str:
    return f"fleet.health.{check_name(check, 'check name')}"


def alerts(host: str, rule: str) -> str:
    # Fleet-wide alerts use the host token `_fleet`.
    return f"fleet.alerts.{check_host_id(host)}.{check_name(rule, 'rule name')}"


def alerting(resource: str, verb: str) -> str:
    """`fleet.alerting.rules.put`: the alerter's config/state API (core NATS, queue group)."""
    return f"fleet.alerting.{check_name(resource, 'resource')}.{check_name(verb, 'verb')}"


def audit(host: str) -> str:
    return f"fleet.audit.{check_host_id(host)}"


def replica(host: str) -> str:
    return f"fleet.replica.{check_host_id(host)}"


def sync(host: str) -> str:
    """Request -> run a replication now on that host (core NATS)."""
    return f"fleet.sync.{check_host_id(host)}"


def deadletter(service: str, host: str = "") -> str:
    """`fleet.deadletter.<service>` for a central service; `fleet.deadletter.<kind>.<host>` for a
    host agent, the only dead-letter subject its permissions let it publish on."""
    base = f"fleet.deadletter.{check_name(service, 'service name')}"
    return f"{base}.{check_host_id(host)}" if host else base


# The micro services that run on every host under the host's own NATS identity.
AGENT_KINDS = ("collector", "commander", "replicator")
# The central services' micro names: only central identities may subscribe to their
# `$SRV.<verb>.<kind>` subjects, so a reply to a request there comes from one of them.
CENTRAL_KINDS = ("ingest", "alerter", "gateway", "authcallout")
SRV_VERBS = ("PING", "INFO", "STATS")


def service_stats(kind: str, instance: str) -> str:
    """Request -> that service instance's micro STATS (its `stats` endpoint, ServiceCounters in
    the endpoint's data); the instance token is the host id of an agent, the micro service id of
    a central service. Only that host's agents may subscribe to an agent's subject, so whatever
    answers there speaks for that host (the gateway's scrape attributes rows by it)."""
    return f"fleet.svc.{check_name(kind, 'service kind')}.{check_name(instance, 'instance')}"


def srv_discovery(kind: str) -> list[str]:
    """What a micro service of `kind` subscribes to to answer `$SRV.<verb>[.<kind>[.<id>]]`."""
    k = check_name(kind, "service kind")
    return (
        [f"$SRV.{v}" for v in SRV_VERBS] + [f"$SRV.{v}.{k}" for v in SRV_VERBS] + [f"$SRV.{v}.{k}.*" for v in SRV_VERBS]
    )


def token(subject: str, index: int) -> str:
    """The index-th token of a subject (0-based); '' when absent."""
    parts = subject.split(".")
    return parts[index] if 0 <= index < len(parts) else ""


def host_subjects_publish(host: str) -> list[str]:
    """What a host's agents may publish (used to generate NATS permissions)."""
    h = check_host_id(host)
    return [
        f"fleet.metrics.{h}",
        f"fleet.procs.{h}",
        f"fleet.hosts.{h}",
        f"fleet.apps.{h}",
        f"fleet.audit.{h}",
        f"fleet.replica.{h}",
        f"fleet.logs.{h}.>",
        f"$KV.fleet_hosts.{h}",
        # Write-only quarantine of what an agent could not decode, on its own host's subjects
        # only (AGENT_DEADLETTER stream: small messages, a bounded count per subject); never a
        # central service's dead-letter subject.
        *(deadletter(kind, h) for kind in AGENT_KINDS),
    ]


def host_subjects_subscribe(host: str) -> list[str]:
    """What a host's agents may subscribe to."""
    h = check_host_id(host)
    return [
        f"fleet.ctl.{h}.>",
        f"fleet.sample.{h}",
        f"fleet.sync.{h}",
        USERS_CHANGED,
        f"{inbox_prefix(h)}.>",
        # Micro discovery and stats of this host's own agents only (not `$SRV.>`).
        *dict.fromkeys(s for kind in AGENT_KINDS for s in srv_discovery(kind)),
        *(service_stats(kind, h) for kind in AGENT_KINDS),
    ]


def inbox_prefix(host: str) -> str:
    """Each host gets its own reply inbox so it cannot read other hosts' replies."""
    return f"_INBOX_{check_host_id(host)}"
