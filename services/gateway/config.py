"""Gateway settings: FLEETWATCH_GATEWAY_* plus the shared NATS/DB/log areas."""

from __future__ import annotations

from pathlib import Path

import msgspec

from libs.runtime import DbSettings, LogSettings, NatsSettings

# Where a wheel carries the built UI (tools/build_hooks.py copies ui/dist there).
PACKAGED_UI = Path(__file__).resolve().parent / "ui"


def default_ui_dir() -> str:
    """The UI the wheel carries when installed from one (whatever the working directory), else
    the source tree's ui/dist (`make ui`), relative to the tree's root (app.ui_dir)."""
    return str(PACKAGED_UI) if (PACKAGED_UI / "index.html").is_file() else "ui/dist"


class GatewayConfig(msgspec.Struct, kw_only=True, frozen=True):
    nats: NatsSettings = NatsSettings()
    db: DbSettings = DbSettings()
    log: LogSettings = LogSettings()
    host: str = "127.0.0.1"
    port: int = 8080
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or CIDR
    # networks, "*" for any). Empty: none, the TCP peer is the client. Anyone who can reach the
    # port could otherwise claim any address and dodge the per-client login limit.
    forwarded_allow_ips: list[str] = []
    # HTTPS: certificate and key files (`fleetwatch certs` writes gateway.crt/.key); empty: plain HTTP.
    tls_cert: str = ""
    tls_key: str = ""
    # Signs session tokens. Empty: a random key per process (tokens die with the process).
    secret_key: str = ""
    admin_password_file: str = ""
    session_ttl_s: float = 12 * 3600
    # sha512-crypt rounds for new hashes (pam_unix verifies any count; glibc's default is 5000).
    hash_rounds: int = 100_000
    # Failed logins allowed per (username, client) within login_window_s before 429; a client
    # over all accounts may fail 10x, and an account from all clients 4x as many.
    login_max_failures: int = 5
    login_window_s: float = 60.0
    # How long a resolved token's user (role, active) is trusted before the DB is asked again.
    auth_cache_s: float = 5.0
    # A host whose last frame is older than this is offline.
    offline_after_s: float = 30.0
    history_max_points: int = 1000
    sample_timeout_s: float = 3.0
    # Live stream (SSE + WebSocket).
    stream_max_clients: int = 2000
    stream_queue_size: int = 1000
    stream_buffer_size: int = 10_000
    stream_heartbeat_s: float = 15.0
    # Clients with new events are woken together every batch_s (0: at once, per event).
    stream_batch_s: float = 0.05
    # /metrics gathers every service's $SRV.STATS: replies awaited this long, the result kept
    # this long (scrapes in between cost NATS nothing); only these kinds when set (large fleets).
    metrics_window_s: float = 0.3
    metrics_cache_s: float = 2.0
    metrics_services: list[str] = []
    # /metrics' event loop lag: a task sleeps this long and records how late it woke (0: off).
    loop_lag_interval_s: float = 0.05
    cors_origins: list[str] = []
    ui_dir: str = default_ui_dir()
    # POST /api/v1/webhook/command: HMAC-SHA256 shared secret (empty: the webhook answers 503)
    # and how far the signed timestamp may be from now.
    webhook_secret: str = ""
    webhook_window_s: float = 300.0
    # Prometheus remote-write (POST /prometheus/api/v1/write): API token id -> the hosts it may
    # write, as `|`-separated glob patterns (e.g. `k3x9=edge-*|lab-1`). A token not listed: 403.
    remote_write_allow: dict[str, str] = {}
