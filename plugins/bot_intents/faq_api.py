"""Admin REST endpoints of FAQ mining: the clusters of a site's questions, and publishing one
as a new intent of the site's flow (``docs/bot.md``, "FAQ mining").

Admins (``sites.manage``) mine and publish for their own site only; publishing into a flow
other sites share is for owners (``bot.flows.shared``, see :mod:`.api`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from kefu.core.errors import ApiError
from kefu.core.types import RestEndpoint
from kefu.plugins.bot_intents.api import file_name, require_flow_change, sees_install


class FaqQuery(BaseModel):
    since: float | None = Field(None, description="only questions at or after (unix seconds)")
    days: float | None = Field(None, gt=0, le=3650, description="only the last N days")
    top: int = Field(20, ge=1, le=200)
    threshold: float = Field(0.2, gt=0, lt=1, description="average cosine similarity to merge")
    window_days: float = Field(7.0, gt=0, le=365, description="trend window")


class FaqRepresentative(BaseModel):
    text: str
    count: int
    similarity: float


class FaqAnswer(BaseModel):
    text: str
    count: int
    answered: int
    share: float


class FaqCluster(BaseModel):
    id: str
    size: int
    share: float
    unique: int
    recent: int
    previous: int
    trend: float | None
    bot_turns: int
    bot_failures: int
    failure_rate: float | None
    representatives: list[FaqRepresentative]
    examples: list[str]
    agent_answer: FaqAnswer | None
    suggested_intent: str


class FaqReport(BaseModel):
    site_id: str
    questions: int
    unique_questions: int
    conversations: int
    clusters_found: int = 0
    clusters: list[FaqCluster]
    since: float | None
    now: float
    window_days: float
    seconds: float


class FaqPublish(BaseModel):
    intent: str = Field(..., min_length=1, max_length=64)
    examples: list[str] = Field(..., min_length=1, max_length=200)
    response: str | dict[str, str] = Field(
        ..., description='the reply: a text, or texts by language ({"en": ..., "zh": ...})'
    )
    flow_id: str | None = Field(None, description="default: the active flow serving the site")
    goto: str | None = Field(None, description="state after the reply (default: after greeting)")
    min_confidence: float | None = Field(None, ge=0, le=1)


class FaqPublished(BaseModel):
    flow_id: str
    sha256: str
    previous: str
    intent: str
    examples: int
    goto: str
    file: str | None
    source: str


def make_faq_endpoints(service_of: Callable[[Any], Any]) -> list[RestEndpoint]:
    async def mine(call: Any) -> FaqReport:
        import time

        from kefu.plugins.bot_intents.faq import MiningOptions, mine_site

        await call.require("sites.manage", call.site_id)
        storage = call.kernel.storage
        if storage is None:
            raise ApiError(503, "unavailable", "no storage backend")
        q: FaqQuery = call.query
        since = q.since
        if q.days is not None:
            since = max(since or 0.0, time.time() - q.days * 86400)
        options = MiningOptions(
            threshold=q.threshold,
            top=q.top,
            window_days=q.window_days,
            embedding_model=call.kernel.config.section("bot").embedding_model,
        )
        report = await mine_site(storage, call.site_id, options, since=since)
        return FaqReport(**report)

    async def publish(call: Any) -> FaqPublished:
        from kefu.plugins.bot_intents.faq_publish import PublishError, publish_faq

        await call.require("sites.manage", call.site_id)
        service = service_of(call.kernel)
        if service is None:
            raise ApiError(503, "unavailable", "the bot is not running")
        body: FaqPublish = call.body
        registry = service.registry
        target = registry.active_flow(body.flow_id) if body.flow_id else None
        target = target or registry.for_site(call.site_id)
        if target is not None and target.spec.serves(call.site_id):
            # a flow other sites share is install-level (issue 13, hole 1)
            await require_flow_change(call, target.spec.sites)
        try:
            result = await publish_faq(
                service, call.site_id, intent=body.intent, examples=body.examples,
                response=body.response, flow_id=body.flow_id, goto=body.goto,
                min_confidence=body.min_confidence,
            )  # fmt: skip
        except PublishError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        if not await sees_install(call):
            result = {**result, "source": file_name(result["source"])}
            result["file"] = file_name(result["file"]) if result.get("file") else None
        return FaqPublished(**result)

    return [
        RestEndpoint(
            "GET", "/v1/bot/faq", "mine_bot_faq", "Cluster the site's visitor questions", "bot",
            mine, response=FaqReport, query=FaqQuery, errors=(503,),
            description="Visitor questions of the site's stored conversations, normalised, "
            "near-duplicates merged and clustered; clusters ranked by size with trend, the "
            "bot's failure rate, representative questions and the agents' most common answer.",
        ),
        RestEndpoint(
            "POST", "/v1/bot/faq/publish", "publish_bot_faq",
            "Publish a question cluster as a new intent of the site's flow", "bot", publish,
            response=FaqPublished, status=201, body=FaqPublish, errors=(404, 409, 400, 503),
            description="Adds the intent (examples: the questions) and a global transition on "
            "it saying the response, and publishes the result as a new version (checked like "
            "any version; refused: 400 with file:line problems, nothing changes). 409 when "
            "the intent name exists.",
        ),
    ]  # fmt: skip
