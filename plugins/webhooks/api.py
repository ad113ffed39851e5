"""The webhooks' REST endpoints (admins of the site): subscriptions, the delivery log, the
dead letters, resend. docs/api.md, "Webhooks"; docs/integrations.md."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from kefu.core.errors import ApiError
from kefu.core.types import RestEndpoint
from kefu.plugins.webhooks import models as m
from kefu.plugins.webhooks.store import DEAD, LOG, PUBLIC_EVENTS, QUEUE, delivery_id

TAG = "webhooks"
ACTION = "webhooks.manage"
DELIVERY_PATTERN = r"^[0-9]{20}\.[0-9a-f]{6}$"
KINDS = {"queued": QUEUE, "delivered": LOG, "dead": DEAD}


def _out(record: Any, secret: bool = False) -> m.SubscriptionOut:
    data = record.data
    return m.SubscriptionOut(
        id=record.id,
        url=data["url"],
        events=data["events"],
        description=data.get("description", ""),
        active=data.get("active", True),
        created_at=data["created_at"],
        secret=data["secret"] if secret else None,
    )


def make_endpoints(service_of: Callable[[Any], Any]) -> list[RestEndpoint]:
    async def service(call: Any) -> Any:
        await call.require(ACTION, call.site_id)
        found = service_of(call.kernel)
        if found is None:
            raise ApiError(503, "unavailable", "webhooks are not running (no storage)")
        return found

    async def subscription(call: Any, svc: Any) -> Any:
        record = await svc.store.subscription(call.site_id, call.params["id"])
        if record is None:
            raise ApiError(404, "unknown_webhook", "no such webhook subscription in this site")
        return record

    async def list_webhooks(call: Any) -> m.SubscriptionList:
        svc = await service(call)
        records = await svc.store.subscriptions(call.site_id)
        return m.SubscriptionList(webhooks=[_out(r) for r in records], events=list(PUBLIC_EVENTS))

    async def create(call: Any) -> m.SubscriptionOut:
        svc = await service(call)
        body = call.body
        data = {
            **body.model_dump(),
            "events": sorted(set(body.events)),
            "secret": "whsec_" + secrets.token_urlsafe(32),
            "created_at": time.time(),
        }
        record = await svc.store.save_subscription(
            call.site_id, "wh_" + secrets.token_hex(8), data, expect_version=0
        )
        await svc.refresh(call.site_id)
        return _out(record, secret=True)

    async def update(call: Any) -> m.SubscriptionOut:
        svc = await service(call)
        record = await subscription(call, svc)
        changes = call.body.model_dump(exclude_none=True)
        if "events" in changes:
            changes["events"] = sorted(set(changes["events"]))
        saved = await svc.store.save_subscription(
            call.site_id, record.id, {**record.data, **changes}, expect_version=record.version
        )
        await svc.refresh(call.site_id)
        return _out(saved)

    async def delete(call: Any) -> None:
        svc = await service(call)
        if not await svc.store.delete_subscription(call.site_id, call.params["id"]):
            raise ApiError(404, "unknown_webhook", "no such webhook subscription in this site")
        await svc.refresh(call.site_id)

    async def deliveries(call: Any) -> m.DeliveryList:
        svc = await service(call)
        record = await subscription(call, svc)
        status = call.query.status
        entries = await svc.store.entries(call.site_id, KINDS[status], record.id)
        newest = entries[::-1][: call.query.limit] if status != "queued" else entries
        return m.DeliveryList(deliveries=[_delivery(e, status) for e in newest[: call.query.limit]])

    async def resend(call: Any) -> m.Resent:
        """A delivered or dead delivery queued again, as a new delivery of the same event."""
        svc = await service(call)
        record = await subscription(call, svc)
        old_id = f"{record.id}/{call.params['delivery']}"
        for kind in (DEAD, LOG):
            entry = await svc.store.entry(call.site_id, kind, old_id)
            if entry is not None:
                break
        else:
            raise ApiError(404, "unknown_delivery", "no delivered or dead delivery with this id")
        new_id = delivery_id(record.id)
        data = {
            **{k: entry.data[k] for k in ("event", "event_id", "conversation_id", "payload")},
            "attempts": 0, "next_at": 0.0, "lease_until": 0.0, "history": [],
            "created_at": time.time(), "resend_of": old_id,
        }  # fmt: skip
        await svc.store.enqueue(call.site_id, new_id, data)
        if kind == DEAD:
            await svc.store.storage.delete_record(call.site_id, DEAD, old_id)
        svc.dispatch_wake.set()
        return m.Resent(id=new_id.split("/", 1)[1])

    base = "/v1/webhooks"
    one = f"{base}/{{id}}"
    return [
        _endpoint("GET", base, "list_webhooks", "List webhook subscriptions", list_webhooks,
                  m.SubscriptionList, description="Admins. Secrets are not shown."),
        _endpoint("POST", base, "create_webhook", "Subscribe a URL to events", create,
                  m.SubscriptionOut, body=m.SubscriptionBody, status=201,
                  description="Admins. The answer holds the signing secret, shown only once."),
        _endpoint("PATCH", one, "update_webhook", "Change a webhook subscription", update,
                  m.SubscriptionOut, body=m.SubscriptionPatch, errors=(404,)),
        _endpoint("DELETE", one, "delete_webhook", "Delete a webhook subscription", delete,
                  None, status=204, errors=(404,),
                  description="Its queued deliveries go to the dead letters."),
        _endpoint("GET", f"{one}/deliveries", "list_webhook_deliveries",
                  "A subscription's queue, delivery log or dead letters", deliveries,
                  m.DeliveryList, query=m.DeliveryQuery, errors=(404,),
                  description="`queued`: oldest first; `delivered` and `dead`: newest first."),
        _endpoint("POST", f"{one}/deliveries/{{delivery}}/resend", "resend_webhook_delivery",
                  "Send a delivered or dead delivery again", resend, m.Resent, status=202,
                  errors=(404,), patterns={"delivery": DELIVERY_PATTERN},
                  description="Queued as a new delivery of the same event (the same "
                  "`X-Kefu-Event-Id`); a dead letter leaves the dead-letter list."),
    ]  # fmt: skip


def _delivery(record: Any, status: str) -> m.DeliveryOut:
    data = record.data
    return m.DeliveryOut(
        id=record.id.split("/", 1)[1],
        event=data["event"],
        event_id=data["event_id"],
        conversation_id=data.get("conversation_id"),
        status=status,
        attempts=data["attempts"],
        next_at=data.get("next_at", 0.0),
        created_at=data["created_at"],
        history=data["history"],
        payload=data["payload"],
    )


def _endpoint(
    method: str, path: str, operation_id: str, summary: str, handler: Any, response: Any, *,
    body: Any = None, query: Any = None, status: int = 200, errors: tuple[int, ...] = (),
    description: str = "", patterns: dict[str, str] | None = None,
) -> RestEndpoint:  # fmt: skip
    return RestEndpoint(
        method, path, operation_id, summary, TAG, handler, response=response, status=status,
        query=query, body=body, errors=(403, *errors), description=description,
        path_patterns=patterns or {},
    )  # fmt: skip
