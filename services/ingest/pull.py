"""Pulling batches from a durable JetStream consumer, with less work per message than nats-py.

nats-py's `fetch` waits for each message of a batch with its own `wait_for` (a task and a timer
per message), which cost ingest about as much CPU as decoding the frames. Here one callback
subscription on a private inbox collects what the server delivers, and a pull request
(`$JS.API.CONSUMER.MSG.NEXT`) asks for up to `batch` messages, waiting at most `wait` seconds
for the batch to fill: a backlog comes in full batches, a live trickle after `wait` at most.
Messages that arrive after a batch was handed out (the tail of an expired request) simply
start the next one; nothing is acked here.
"""

from __future__ import annotations

import asyncio
import json

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

# Statuses that end a pull request without an error: no messages (no_wait), request expired,
# and 409s such as "Exceeded MaxWaiting" or a leader change (the next request goes on).
_END = {api.StatusCode.NO_MESSAGES, api.StatusCode.REQUEST_TIMEOUT, api.StatusCode.CONFLICT}


class PullFailed(Exception):
    """The server ended a pull request with an error (e.g. 503: no such consumer)."""


class Puller:
    def __init__(self, nc: NATS, stream: str, durable: str, *, batch: int, wait: float) -> None:
        self.nc = nc
        self.batch = batch
        self.wait = wait
        self._next = f"{api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = ""
        self._sub: Subscription | None = None
        self._msgs: list[Msg] = []
        self._done: asyncio.Future | None = None
        self._status: str | None = None

    async def start(self) -> None:
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox, cb=self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply:  # a stored message: its reply subject is where the ack goes
            self._msgs.append(msg)
            if len(self._msgs) >= self.batch:
                self._finish()
            return
        headers = msg.headers or {}
        status = headers.get(api.Header.STATUS)
        if status and status != api.StatusCode.CONTROL_MESSAGE:  # heartbeats carry nothing
            self._status = f"{status} {headers.get(api.Header.DESCRIPTION, '')}".strip()
            self._finish()

    def _finish(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def fetch(self) -> list[Msg]:
        """Up to `batch` messages (possibly none after `wait` seconds). Raises PullFailed."""
        if len(self._msgs) < self.batch:
            self._done = asyncio.get_running_loop().create_future()
            self._status = None
            want = self.batch - len(self._msgs)
            req = json.dumps({"batch": want, "expires": int(self.wait * 1e9)}).encode()
            await self.nc.publish(self._next, req, reply=self._inbox)
            try:
                # The server answers by `wait`; the margin covers a slow answer, or one lost
                # with a reconnect (then the next request goes out a second later).
                await asyncio.wait_for(asyncio.shield(self._done), self.wait + 1)
            except TimeoutError:
                pass
            status, self._done = self._status, None
            if status and status.split()[0] not in _END and not self._msgs:
                raise PullFailed(status)
        msgs, self._msgs = self._msgs[: self.batch], self._msgs[self.batch :]
        return msgs
