"""The three ways out: Telegram Bot API, email (aiosmtplib, STARTTLS or TLS), signed webhook.

Each `send` raises `Retryable` for what may pass on a later attempt (network, 5xx, 429) and
`Permanent` for what will not (401, bad address). Error texts never carry a secret: the bot
token sits in the Telegram URL path, so every message is scrubbed of it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import time
from email.message import EmailMessage

import aiosmtplib
import httpx

from libs.schemas.alerting import Notifier


class Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Permanent(Exception):
    pass


def missing_config(n: Notifier) -> str:
    """Why this notifier cannot send, or '' when it is configured."""
    need: list[tuple[str, str | list[str]]]
    if n.kind == "telegram":
        need = [("bot_token", n.bot_token), ("chat_id", n.chat_id)]
    elif n.kind == "email":
        need = [("smtp_host", n.smtp_host), ("mail_from", n.mail_from), ("mail_to", n.mail_to)]
    else:
        need = [("url", n.url)]
    gaps = [k for k, v in need if not v]
    return f"missing {', '.join(gaps)}" if gaps else ""


def _scrub(text: str, n: Notifier) -> str:
    for s in (n.bot_token, n.smtp_password, n.webhook_secret):
        if s:
            text = text.replace(s, "***")
    return text


def _http_status(resp: httpx.Response, n: Notifier) -> None:
    if resp.status_code < 300:
        return
    detail = _scrub(resp.text[:200], n)
    if resp.status_code == 429 or resp.status_code >= 500:
        retry_after = None
        try:
            retry_after = float(resp.json().get("parameters", {}).get("retry_after"))
        except Exception:
            ra = resp.headers.get("retry-after")
            retry_after = float(ra) if ra and ra.replace(".", "", 1).isdigit() else None
        raise Retryable(f"HTTP {resp.status_code}: {detail}", retry_after)
    raise Permanent(f"HTTP {resp.status_code}: {detail}")


async def send_telegram(client: httpx.AsyncClient, n: Notifier, subject: str, text: str) -> None:
    url = f"{n.base_url.rstrip('/')}/bot{n.bot_token}/sendMessage"
    try:
        resp = await client.post(
            url, json={"chat_id": n.chat_id, "text": text[:4000], "disable_web_page_preview": True}, timeout=10
        )
    except httpx.HTTPError as exc:
        raise Retryable(_scrub(f"{type(exc).__name__}: {exc}", n)) from None
    _http_status(resp, n)
    try:
        ok = resp.json().get("ok")
    except ValueError:
        ok = False
    if not ok:
        raise Permanent(f"Bot API answered without ok: {_scrub(resp.text[:200], n)}")


def _tls_context(n: Notifier) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if n.smtp_ca_file:
        ctx.load_verify_locations(n.smtp_ca_file)
    return ctx


async def send_email(n: Notifier, subject: str, text: str) -> None:
    msg = EmailMessage()
    msg["From"] = n.mail_from
    msg["To"] = ", ".join(n.mail_to)
    msg["Subject"] = subject
    msg.set_content(text)
    kwargs: dict = dict(hostname=n.smtp_host, port=n.smtp_port, timeout=15)
    if n.smtp_tls == "tls":
        kwargs.update(use_tls=True, tls_context=_tls_context(n))
    elif n.smtp_tls == "starttls":
        kwargs.update(start_tls=True, tls_context=_tls_context(n))
    else:
        kwargs.update(start_tls=False, use_tls=False)
    if n.smtp_user:
        kwargs.update(username=n.smtp_user, password=n.smtp_password)
    try:
        await aiosmtplib.send(msg, **kwargs)
    except (aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPSenderRefused) as exc:
        raise Permanent(_scrub(f"{type(exc).__name__}: {exc}", n)) from None
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise Retryable(_scrub(f"{type(exc).__name__}: {exc}", n)) from None


SIGNATURE_HEADER = "X-Fleetwatch-Signature"
TIMESTAMP_HEADER = "X-Fleetwatch-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>` (the timestamp stops replays)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


async def send_webhook(client: httpx.AsyncClient, n: Notifier, payload: dict) -> None:
    body = json.dumps(payload, sort_keys=True).encode()
    ts = str(int(time.time()))
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: ts}
    if n.webhook_secret:
        headers[SIGNATURE_HEADER] = sign(n.webhook_secret, ts, body)
    try:
        resp = await client.post(n.url, content=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise Retryable(_scrub(f"{type(exc).__name__}: {exc}", n)) from None
    _http_status(resp, n)
