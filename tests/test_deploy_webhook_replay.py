"""Two gateway replicas behind one NATS: a signed webhook request is accepted once in all,
whichever replica sees it first, even when both get it at the same moment."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.commander import signed_webhook
from tests.support.gateway import running_gateway

pytestmark = pytest.mark.timeout(180)

SECRET = "two-replicas-webhook-secret"
HOST = "replay-host"  # no commander: a request past the replay guard gets the ctl call's 503


def passed_guard(r: httpx.Response) -> bool:
    return r.status_code == 503 and "no commander answers" in r.json()["detail"]


async def test_signed_request_accepted_once_across_two_gateways(nats_stack, db_dsn, workdir):
    with running_gateway(nats_stack, db_dsn, workdir / "gw-a", webhook_secret=SECRET) as a:
        with running_gateway(
            nats_stack, db_dsn, workdir / "gw-b", webhook_secret=SECRET, admin_password=a.admin_password
        ) as b:
            async with httpx.AsyncClient(timeout=90) as c:

                async def send(gw, req) -> httpx.Response:
                    return await c.post(f"{gw.url}/api/v1/webhook/command", content=req.content, headers=req.headers)

                # One after the other: A accepts, then B (and A) refuse the replay.
                req = signed_webhook(SECRET, {"host": HOST, "verb": "apps.list", "actor": "seq"})
                first = await send(a, req)
                assert passed_guard(first), first.text
                again_b, again_a = await send(b, req), await send(a, req)
                assert again_b.status_code == 409 and "replay" in again_b.json()["detail"], again_b.text
                assert again_a.status_code == 409, again_a.text

                # At the same moment, many times over: exactly one replica wins each request.
                for i in range(10):
                    req = signed_webhook(SECRET, {"host": HOST, "verb": "apps.list", "actor": f"race-{i}"})
                    replies = await asyncio.gather(send(a, req), send(b, req), send(a, req), send(b, req))
                    assert sum(passed_guard(r) for r in replies) == 1, [r.text for r in replies]
                    assert sum(r.status_code == 409 for r in replies) == 3, [r.text for r in replies]

                # A fresh signature is not a replay on either.
                fresh = signed_webhook(SECRET, {"host": HOST, "verb": "apps.list", "actor": "fresh"})
                assert passed_guard(await send(b, fresh))
