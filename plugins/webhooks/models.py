"""Request and response models of the webhooks' REST endpoints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from kefu.plugins.webhooks.store import PUBLIC_EVENTS

#: http(s), a host, no spaces or control characters (spelt out: ``\s`` differs between the
#: JSON Schema's regex dialect and Python's).
URL_PATTERN = r"^https?://[^/?#@\x00-\x20\x7f-\x9f]+(/[^\x00-\x20\x7f-\x9f]*)?$"
Url = Annotated[str, StringConstraints(max_length=2000, pattern=URL_PATTERN)]
EventName = Literal[("*", *PUBLIC_EVENTS)]  # type: ignore[valid-type]
Events = Annotated[list[EventName], Field(min_length=1, max_length=len(PUBLIC_EVENTS) + 1)]
Description = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubscriptionBody(Request):
    url: Url = Field(description="Where events are POSTed (http or https).")
    events: Events = Field(description='Event names to receive, or `["*"]` for all of them.')
    description: Description = ""
    active: bool = Field(True, description="An inactive subscription queues nothing new.")


class SubscriptionPatch(Request):
    url: Url | None = None
    events: Events | None = None
    description: Description | None = None
    active: bool | None = None


class SubscriptionOut(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str
    active: bool
    created_at: float
    secret: str | None = Field(
        None, description="The signing secret: only in the answer that created it."
    )


class SubscriptionList(BaseModel):
    webhooks: list[SubscriptionOut]
    events: list[str] = Field(description="Every event name a subscription may ask for.")


class DeliveryQuery(BaseModel):
    status: Literal["queued", "delivered", "dead"] = "queued"
    limit: int = Field(50, ge=1, le=500, description="The newest this many.")


class Attempt(BaseModel):
    at: float
    status: int | None
    error: str | None
    ms: float


class DeliveryOut(BaseModel):
    id: str = Field(description="The delivery id (the `X-Kefu-Delivery` header's last part).")
    event: str
    event_id: str
    conversation_id: str | None
    status: Literal["queued", "delivered", "dead"]
    attempts: int
    next_at: float
    created_at: float
    history: list[Attempt]
    payload: dict[str, Any]


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]


class Resent(BaseModel):
    id: str = Field(description="The new delivery's id.")
