"""Answers a generative provider composes from help-article passages (``kefu_bot_generate``).

When the knowledge base is confident about a question no intent covers, the bot asks
the provider (if a plugin implements the hook) to answer from the best passages. While
the answer grows it is shown to the conversation as ephemeral ``bot_draft`` frames (at
most one per :data:`DRAFT_INTERVAL_S`); the answer itself, with its sources, is then
stored and delivered like any bot message under the draft's ``cid``, which replaces the
draft (docs/protocol.md). A refusal hands the conversation over; no answer at all
(no provider, busy, over budget, timed out) leaves the best passage as it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from kefu.core.types import BotReply, GeneratedAnswer, KnowledgeAnswer

log = logging.getLogger(__name__)

#: Seconds between two ``bot_draft`` frames of one answer at least.
DRAFT_INTERVAL_S = 0.1
#: Passages the provider is given at most.
PASSAGES = 3

HANDOFF_TEXT = {
    "en": "I could not find the answer in our help articles; I am passing you to a colleague.",
    "zh": "我在帮助文章中没有找到答案，正在为您转接人工客服。",  # noqa: RUF001
}
HELPED = {"en": "Did this help?", "zh": "这个回答有帮助吗？"}  # noqa: RUF001


def reply_cid(key: str, index: int) -> str:
    """The ``cid`` of the bot's ``index``-th message of a turn (``key``: the seq answered)."""
    return f"bot-{key}-{index}"


class Draft:
    """The ``bot_draft`` frames of one answer, to the visitor and every watcher."""

    def __init__(self, kernel: Any, conversation: Any, cid: str, sender: str) -> None:
        self.kernel, self.conversation = kernel, conversation
        self.frame = {
            "op": "bot_draft",
            "conversation_id": conversation.id,
            "cid": cid,
            "sender": {"kind": "bot", "id": sender},
            "text": "",
            "state": "streaming",
        }
        self.sent_at = -1.0
        self.frames = 0

    async def show(self, text: str) -> None:
        now = time.monotonic()
        if now - self.sent_at < DRAFT_INTERVAL_S or self.kernel.delivery is None:
            return  # the next one (or the stored message) carries this text too
        self.sent_at = now
        await self._send(text, "streaming")

    async def drop(self) -> None:
        """The draft will not become this answer: clients remove it."""
        if self.frames and self.kernel.delivery is not None:
            await self._send("", "dropped")

    async def _send(self, text: str, state: str) -> None:
        self.frames += 1
        frame = {**self.frame, "text": text, "state": state}
        await self.kernel.delivery.publish_conversation(self.conversation, frame, ephemeral=True)


def with_sources(answer: GeneratedAnswer, passages: Sequence[KnowledgeAnswer], lang: str) -> str:
    if lang == "zh":
        cited = "；".join(f"[{i + 1}]《{passages[i].title}》" for i in answer.cited)  # noqa: RUF001
        return f"{answer.text}\n\n来源：{cited}"  # noqa: RUF001
    cited = "; ".join(f'[{i + 1}] "{passages[i].title}"' for i in answer.cited)
    return f"{answer.text}\n\nSources: {cited}"


async def generated_reply(
    kernel: Any,
    conversation: Any,
    message: Any,
    best: KnowledgeAnswer,
    lang: str,
    sender: str,
    counts: dict[str, int],
) -> BotReply | None:
    """The provider's answer (or its refusal: a handoff), None to answer with ``best``."""
    question = message.text or ""
    passages = await kernel.hooks.bot_passages(conversation.site_id, question, lang, PASSAGES)
    if not passages or passages[0].article_id != best.article_id:
        passages = [best, *(p for p in passages or () if p.article_id != best.article_id)]
    draft = Draft(kernel, conversation, reply_cid(str(message.seq), 0), sender)
    try:
        answer = await kernel.hooks.bot_generate(
            conversation.site_id, question, passages[:PASSAGES], lang, draft.show
        )
    except Exception:
        log.exception("generative answer for %s failed", conversation.id)
        answer = None
    if answer is None or answer.refused:
        await draft.drop()
    if answer is None:
        return None
    if answer.refused:
        counts["generated_refusals"] += 1
        text = HANDOFF_TEXT.get(lang, HANDOFF_TEXT["en"])
        return BotReply((text,), True, f"knowledge_{answer.reason or 'refused'}")
    counts["generated_answers"] += 1
    text = with_sources(answer, passages, lang)
    return BotReply((text, HELPED.get(lang, HELPED["en"])))
