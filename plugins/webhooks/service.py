"""Outgoing webhooks of one kernel: intake, durable queue, delivery (docs/integrations.md).

- **Intake** (``kefu_event``): an event that some active subscription of its site wants is
  put in a memory buffer and nothing else: no I/O on the path that emitted it (the message
  path awaits its listeners). A writer task turns the buffer into queue records, building
  each payload there (a ``message.created`` reads its message from storage), and flushes it
  when the kernel stops.
- **Delivery**: every process looks at the queues of the sites with subscriptions every
  ``poll_interval_s`` (and at once after queueing or settling one). Per subscription and
  conversation only the oldest delivery is attempted: a later event of the same
  conversation waits until the earlier one is delivered or given up, so a receiver sees a
  conversation's events in order. A delivery is claimed with a lease (a versioned write),
  so two processes never attempt it at once. 2xx is delivered (moved to the log); anything
  else is retried after ``backoff_base_s * 2^(n-1)`` (capped, with jitter), and after
  ``max_attempts`` it goes to the dead letters, whence an admin can resend it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from typing import Any

import aiohttp
import orjson

from kefu.core import __version__, signing
from kefu.plugins.webhooks.store import DEAD, EVENTS, LOG, Store, delivery_id, subscription_of

log = logging.getLogger(__name__)

HISTORY = 20  # attempts kept per delivery
DROPPED_FIELDS = frozenset({"ack_ms", "transport"})  # internal figures, not for receivers


def backoff(settings: Any, attempts: int) -> float:
    """The wait after the ``attempts``-th failure: doubling, capped, half of it jittered."""
    delay = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempts - 1))
    return delay / 2 + random.uniform(0, delay / 2)


class Webhooks:
    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.store = Store(kernel.storage)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.subs: dict[str, list[dict]] = {}  # site -> subscriptions (with "id")
        self.pending: collections.deque = collections.deque()
        self.inflight: dict[str, asyncio.Task] = {}
        self.writer_wake = asyncio.Event()
        self.written = asyncio.Event()  # set while the buffer is empty
        self.written.set()
        self.dispatch_wake = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self.http: aiohttp.ClientSession | None = None
        self.accepting = False
        self.refreshed = 0.0
        self.counts = collections.Counter()

    @property
    def settings(self) -> Any:
        return self.kernel.config.section("webhooks")

    # -- life -------------------------------------------------------------------------
    async def start(self) -> None:
        self.http = aiohttp.ClientSession(
            headers={"User-Agent": f"kefu-webhooks/{__version__}"},
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
        )
        with contextlib.suppress(Exception):
            await self.refresh()
        self.accepting = True
        self.tasks = [
            asyncio.create_task(self._write_loop(), name="kefu-webhooks-writer"),
            asyncio.create_task(self._dispatch_loop(), name="kefu-webhooks-dispatch"),
        ]

    async def stop(self) -> None:
        """Stop taking events, write those buffered, let attempts in flight end (up to the
        attempt timeout), give the leases of the others back."""
        self.writer_wake.set()
        deadline = time.monotonic() + max(self.settings.timeout_s, 5.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.written.wait(), deadline - time.monotonic())
        self.accepting = False
        if self.pending:
            log.error("webhooks: %d events could not be queued before stopping", len(self.pending))
        self.tasks[1].cancel()  # no new attempts
        if self.inflight:
            await asyncio.wait(
                list(self.inflight.values()), timeout=max(deadline - time.monotonic(), 0.1)
            )
        for task in [*self.tasks, *self.inflight.values()]:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.inflight.values(), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.release_leases()
        if self.http is not None:
            await self.http.close()

    async def release_leases(self) -> None:
        """Give back the deliveries this process still holds (an attempt cut short, a claim
        made as the loop was stopped), so that the next process need not wait ``lease_s``."""
        now = time.time()
        for site_id in list(self.subs):
            for record in await self.store.queued(site_id):
                data = record.data
                if data.get("owner") == self.owner and data["lease_until"] > now:
                    await self.store.claim(site_id, record, {**data, "lease_until": 0.0})

    # -- subscriptions ------------------------------------------------------------------
    async def refresh(self, site_id: str | None = None) -> None:
        sites = [site_id] if site_id is not None else await self.store.sites()
        for site in sites:
            records = await self.store.subscriptions(site)
            self.subs[site] = [{**r.data, "id": r.id} for r in records]
        if site_id is None:
            self.refreshed = time.monotonic()

    def wanted(self, site_id: str, name: str) -> list[dict]:
        return [
            sub
            for sub in self.subs.get(site_id, ())
            if sub.get("active", True) and (name in sub["events"] or "*" in sub["events"])
        ]

    # -- intake -------------------------------------------------------------------------
    def on_event(self, event: Any) -> None:
        """Buffer the event for every subscription that wants it: no I/O here."""
        name = EVENTS.get(event.type)
        if name is None or event.site_id is None or not self.accepting:
            return
        subs = self.wanted(event.site_id, name)
        if not subs:
            return
        if len(self.pending) + len(subs) > self.settings.buffer:
            self.counts["dropped"] += len(subs)
            log.warning("webhooks: buffer full, %s dropped for %d subscriptions", name, len(subs))
            return
        event_id = f"evt_{time.time_ns():x}{secrets.token_hex(4)}"
        for sub in subs:
            self.pending.append((event.site_id, delivery_id(sub["id"]), name, event_id, event))
        self.written.clear()
        self.writer_wake.set()

    async def _write_loop(self) -> None:
        while True:
            await self.writer_wake.wait()
            self.writer_wake.clear()
            while self.pending:
                site_id, delivery, name, event_id, event = self.pending[0]
                try:
                    payload = await self.payload(name, event_id, event)
                    data = {
                        "event": name,
                        "event_id": event_id,
                        "conversation_id": event.data.get("conversation_id"),
                        "payload": payload,
                        "attempts": 0,
                        "next_at": 0.0,
                        "lease_until": 0.0,
                        "history": [],
                        "created_at": event.ts,
                    }
                    await self.store.enqueue(site_id, delivery, data)
                except Exception:
                    log.exception("webhooks: could not queue %s; trying again", delivery)
                    await asyncio.sleep(1.0)
                    continue
                self.pending.popleft()
                self.counts["queued"] += 1
                self.dispatch_wake.set()
            self.written.set()

    async def payload(self, name: str, event_id: str, event: Any) -> dict:
        data = {k: v for k, v in event.data.items() if k not in DROPPED_FIELDS}
        if name == "message.created":
            found = await self.kernel.storage.list_messages(
                event.site_id, data["conversation_id"], after_seq=data["seq"] - 1, limit=1
            )
            if found and found[0].seq == data["seq"]:
                message = found[0]
                data["message"] = {
                    "seq": message.seq,
                    "cid": message.cid,
                    "type": message.type,
                    "text": message.text,
                    "attachment": message.attachment,
                    "sender": {"kind": message.sender_kind, "id": message.sender_id},
                    "created_at": message.created_at,
                }
        return {
            "id": event_id,
            "type": name,
            "site_id": event.site_id,
            "created_at": event.ts,
            "data": data,
        }

    # -- delivery -----------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dispatch_wake.wait(), self.settings.poll_interval_s)
            self.dispatch_wake.clear()
            try:
                if time.monotonic() - self.refreshed > self.settings.refresh_s:
                    await self.refresh()
                for site_id in list(self.subs):
                    await self.dispatch_site(site_id)
            except Exception:
                log.exception("webhooks: a delivery pass failed")
                await asyncio.sleep(self.settings.poll_interval_s)

    async def dispatch_site(self, site_id: str) -> None:
        """Attempt the oldest due delivery of each (subscription, conversation)."""
        now = time.time()
        seen: set[tuple[str, str]] = set()
        for record in await self.store.queued(site_id):
            data = record.data
            key = (subscription_of(record.id), data.get("conversation_id") or record.id)
            if key in seen:
                continue  # an older delivery of this conversation is still on its way
            seen.add(key)
            if record.id in self.inflight or data["lease_until"] > now or data["next_at"] > now:
                continue
            if len(self.inflight) >= self.settings.concurrency:
                return
            lease = {**data, "lease_until": now + self.settings.lease_s, "owner": self.owner}
            claimed = await self.store.claim(site_id, record, lease)
            if claimed is None:
                continue  # another process claimed it
            task = asyncio.create_task(self.attempt(site_id, claimed))
            self.inflight[record.id] = task
            task.add_done_callback(lambda _t, rid=record.id: self.inflight.pop(rid, None))

    async def attempt(self, site_id: str, claimed: Any) -> None:
        data = dict(claimed.data)
        sub_id = subscription_of(claimed.id)
        sub = next((s for s in self.subs.get(site_id, ()) if s["id"] == sub_id), None)
        if sub is None:
            sub_record = await self.store.subscription(site_id, sub_id)
            sub = None if sub_record is None else {**sub_record.data, "id": sub_id}
        started = time.time()
        status, error = None, None
        if sub is None:
            error = "the subscription was deleted"
        else:
            status, error = await self.post(sub, claimed.id, data)
        attempt = {"at": started, "status": status, "error": error,
                   "ms": round((time.time() - started) * 1000, 1)}  # fmt: skip
        data["attempts"] += 1
        data["history"] = [*data["history"], attempt][-HISTORY:]
        data["lease_until"] = 0.0
        if error is None:
            data["delivered_at"] = time.time()
            self.counts["delivered"] += 1
            await self.store.settle(site_id, claimed, LOG, data)
            if self.counts["delivered"] % 50 == 0:
                await self.store.prune_log(site_id, sub_id, self.settings.log_keep)
        elif sub is None or data["attempts"] >= self.settings.max_attempts:
            data["dead_at"] = time.time()
            self.counts["dead"] += 1
            log.warning("webhooks: %s gave up after %d attempts: %s", claimed.id,
                        data["attempts"], error)  # fmt: skip
            await self.store.settle(site_id, claimed, DEAD, data)
        else:
            self.counts["failed_attempts"] += 1
            data["next_at"] = time.time() + backoff(self.settings, data["attempts"])
            await self.store.retry_later(site_id, claimed, data)
        self.dispatch_wake.set()

    async def post(self, sub: dict, delivery: str, data: dict) -> tuple[int | None, str | None]:
        """One attempt: (HTTP status, None) when delivered, else (status or None, error)."""
        body = orjson.dumps(data["payload"])
        headers = {
            "Content-Type": "application/json",
            "X-Kefu-Event": data["event"],
            "X-Kefu-Event-Id": data["event_id"],
            "X-Kefu-Delivery": delivery,
            signing.HEADER: signing.sign(sub["secret"], body),
        }
        assert self.http is not None
        try:
            async with self.http.post(sub["url"], data=body, headers=headers) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return resp.status, None
                return resp.status, f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300]

    def stats(self) -> dict[str, float]:
        return {
            "webhooks_queued_total": self.counts["queued"],
            "webhooks_delivered_total": self.counts["delivered"],
            "webhooks_failed_attempts_total": self.counts["failed_attempts"],
            "webhooks_dead_total": self.counts["dead"],
            "webhooks_dropped_total": self.counts["dropped"],
            "webhooks_buffered": len(self.pending),
            "webhooks_in_flight": len(self.inflight),
        }
