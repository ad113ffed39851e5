"""Webhook subscriptions, the delivery queue, the delivery log and the dead letters, kept as
storage records (docs/storage.md, "Plugin records"), so that they survive a restart and are
shared by every process on the same storage.

Kinds, all scoped by site:

- ``webhooks.subscription`` (id: the subscription id): url, events, secret, active;
- ``webhooks.queue`` (id ``<subscription>/<20-digit ns>.<random>``): a delivery waiting or
  being attempted; ids sort in the order the events happened in a process, so listing one
  subscription's prefix gives its queue oldest first;
- ``webhooks.log`` (same id): delivered, with its attempts (the newest ``log_keep`` kept);
- ``webhooks.dead`` (same id): given up after ``max_attempts``, until resent or deleted;

and ``webhooks.site`` at install level (id: a site id): the sites that have subscriptions,
so that each process knows which sites' queues to look at.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from kefu.core.storage import INSTALL, Record, VersionConflict

SUBSCRIPTION = "webhooks.subscription"
QUEUE = "webhooks.queue"
LOG = "webhooks.log"
DEAD = "webhooks.dead"
SITE = "webhooks.site"
PAGE = 500

#: kefu's domain events (hooks/events.py) and the names subscribers see.
EVENTS: dict[str, str] = {
    "conversation.started": "conversation.created",
    "conversation.assigned": "conversation.assigned",
    "conversation.transferred": "conversation.transferred",
    "conversation.resolved": "conversation.resolved",
    "conversation.reopened": "conversation.reopened",
    "conversation.rated": "conversation.rated",
    "bot.handoff": "conversation.handoff",
    "message.stored": "message.created",
    "offline_message.created": "offline_message.created",
}
PUBLIC_EVENTS = tuple(sorted(set(EVENTS.values())))

_last_ns = 0


def delivery_id(subscription_id: str) -> str:
    """``<subscription>/<ns>.<random>``: increasing within this process."""
    global _last_ns
    _last_ns = max(time.time_ns(), _last_ns + 1)
    return f"{subscription_id}/{_last_ns:020d}.{secrets.token_hex(3)}"


def subscription_of(delivery: str) -> str:
    return delivery.split("/", 1)[0]


async def all_records(storage: Any, site_id: str, kind: str, prefix: str = "") -> list[Record]:
    """Every record of a kind (and id prefix), in id order, page by page."""
    out: list[Record] = []
    after = ""
    while True:
        page = await storage.list_records(site_id, kind, prefix=prefix, after=after, limit=PAGE)
        out += page
        if len(page) < PAGE:
            return out
        after = page[-1].id


class Store:
    """The records of the webhooks plugin on one storage backend."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    # -- subscriptions ----------------------------------------------------------------
    async def subscriptions(self, site_id: str) -> list[Record]:
        return await all_records(self.storage, site_id, SUBSCRIPTION)

    async def subscription(self, site_id: str, subscription_id: str) -> Record | None:
        return await self.storage.get_record(site_id, SUBSCRIPTION, subscription_id)

    async def save_subscription(
        self, site_id: str, subscription_id: str, data: dict, expect_version: int | None = None
    ) -> Record:
        record = await self.storage.put_record(
            site_id, SUBSCRIPTION, subscription_id, data, expect_version=expect_version
        )
        await self.storage.put_record(INSTALL, SITE, site_id, {"since": time.time()})
        return record

    async def delete_subscription(self, site_id: str, subscription_id: str) -> bool:
        return await self.storage.delete_record(site_id, SUBSCRIPTION, subscription_id)

    async def sites(self) -> list[str]:
        return [r.id for r in await all_records(self.storage, INSTALL, SITE)]

    # -- the queue --------------------------------------------------------------------
    async def enqueue(self, site_id: str, delivery: str, data: dict) -> None:
        await self.storage.put_record(site_id, QUEUE, delivery, data, expect_version=0)

    async def queued(self, site_id: str, prefix: str = "") -> list[Record]:
        return await all_records(self.storage, site_id, QUEUE, prefix)

    async def claim(self, site_id: str, record: Record, data: dict) -> Record | None:
        """Write ``data`` (a lease) if nobody wrote since ``record`` was read; else None."""
        try:
            return await self.storage.put_record(
                site_id, QUEUE, record.id, data, expect_version=record.version
            )
        except VersionConflict:
            return None

    async def settle(self, site_id: str, claimed: Record, kind: str, data: dict) -> bool:
        """Move a claimed delivery to the log or the dead letters (kind); False when
        another process took it meanwhile (our lease ran out)."""
        await self.storage.put_record(site_id, kind, claimed.id, data)
        try:
            return await self.storage.delete_record(
                site_id, QUEUE, claimed.id, expect_version=claimed.version
            )
        except VersionConflict:
            return False

    async def retry_later(self, site_id: str, claimed: Record, data: dict) -> None:
        try:
            await self.storage.put_record(
                site_id, QUEUE, claimed.id, data, expect_version=claimed.version
            )
        except VersionConflict:
            pass  # our lease ran out and another process has it now

    # -- log and dead letters ---------------------------------------------------------
    async def entries(self, site_id: str, kind: str, subscription_id: str) -> list[Record]:
        return await all_records(self.storage, site_id, kind, f"{subscription_id}/")

    async def entry(self, site_id: str, kind: str, delivery: str) -> Record | None:
        return await self.storage.get_record(site_id, kind, delivery)

    async def prune_log(self, site_id: str, subscription_id: str, keep: int) -> int:
        entries = await self.entries(site_id, LOG, subscription_id)
        gone = 0
        for record in entries[: max(len(entries) - keep, 0)]:
            gone += bool(await self.storage.delete_record(site_id, LOG, record.id))
        return gone
