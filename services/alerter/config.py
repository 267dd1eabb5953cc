"""FLEETWATCH_ALERTER_* settings. The telegram/smtp/webhook settings define the notifiers named
`telegram`, `email` and `webhook` (as the seeds' keep-alive monitor read its credentials from the
environment); a notifier of the same name stored at run time replaces them."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from libs.runtime import LogSettings, NatsSettings


class AlerterConfig(msgspec.Struct, kw_only=True, frozen=True):
    nats: NatsSettings = NatsSettings()
    log: LogSettings = LogSettings()
    rules_file: str = ""  # TOML or JSON: rules, checks, silences, notifiers loaded at start
    builtin_rules: bool = True
    repeat_interval_s: float = 4 * 3600.0  # Alertmanager's default
    group_wait_s: float = 0.5  # Alertmanager waits 30 s; this batches what one frame or tick brings
    # After a group (rule) notified, its next message waits this long (Alertmanager: 5 min); one
    # minute keeps a storm to a message per rule per minute without holding a recovery notice 5 min.
    group_interval_s: float = 60.0
    tick_s: float = 0.25  # host-down and pending-notification sweep
    lookback_s: float = 30.0
    state_retention_s: float = (
        7 * 86400.0
    )  # ended alerts are forgotten after this  # frames replayed at start, so a restart knows who was alive
    # The UI address a notification links to; "" takes FLEETWATCH_PUBLIC_URL (shared with the
    # gateway), else the gateway's listen address (FLEETWATCH_GATEWAY_HOST/PORT), see public_url().
    ui_url: str = ""
    notify_attempts: int = 4
    notify_backoff_s: float = 0.5
    run_checks: bool = True
    telegram_bot_token: str = ""
    telegram_chat_id: str = ""
    telegram_base_url: str = "https://api.telegram.org"
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_tls: str = "starttls"
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_ca_file: str = ""
    mail_from: str = ""
    mail_to: list[str] = []
    webhook_url: str = ""
    webhook_secret: str = ""


def public_url(config: AlerterConfig, env: Mapping[str, str] | None = None) -> str:
    """Where people reach the UI: the alerter's own setting, the deployment's public URL, or the
    address the gateway listens on (a wildcard bind becomes loopback: it names no reachable host)."""
    env = os.environ if env is None else env
    if config.ui_url:
        return config.ui_url.rstrip("/")
    if env.get("FLEETWATCH_PUBLIC_URL"):
        return env["FLEETWATCH_PUBLIC_URL"].rstrip("/")
    host = env.get("FLEETWATCH_GATEWAY_HOST", "127.0.0.1")
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{env.get('FLEETWATCH_GATEWAY_PORT', '8080')}"
