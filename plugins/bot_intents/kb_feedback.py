"""The bot's answers from help articles and the visitor's "did this help?" answer.

- **Asking.** An article answer is its passage with the citation (or a generative
  provider's answer from the passages, :mod:`.generative`), then "Did this help?" with
  the quick replies *Yes* / *No* (有帮助 / 没有帮助 for a Chinese question). The
  conversation keeps what was asked in ``meta.kb_asked`` {article_id, seq, lang, at}.
- **Recording.** The visitor's next message, if it is a yes or a no (a button, or typed:
  ``yes``, ``thanks``, ``not really``, 是, 有, 解决了, 不是, 没有, 没用…), is recorded:
  the counters ``bot_knowledge_helped`` / ``bot_knowledge_not_helped`` (``kefu_stats``),
  ``meta.kb_feedback`` (the last answer) and the event ``bot.knowledge_feedback``
  {conversation_id, article_id, helped, seq}, which the knowledge-base plugin adds up per
  article. Anything else is a new question; the mark is dropped.
- **No.** The bot says so and hands the conversation over as the flow's fallback handoff
  does (its department, if the flow names one), reason ``kb_not_helpful``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

from kefu.core.domain import BOT, Conversation
from kefu.core.text import normalize_text
from kefu.core.types import BotReply, KnowledgeAnswer
from kefu.plugins.bot_intents.generative import HELPED

ASKED = "kb_asked"
FEEDBACK = "kb_feedback"
HANDOFF_REASON = "kb_not_helpful"

CHOICES = {"en": ("Yes", "No"), "zh": ("有帮助", "没有帮助")}
_YES = frozenset(
    "yes|y|yep|yeah|yup|ya|sure|ok|okay|thanks|thank you|thx|great|perfect|it did|yes it did|"
    "that helped|it helped|that helps|helpful|very helpful|yes thanks|yes thank you|got it|"
    "是|是的|有|有的|有帮助|有用|对|对的|嗯|嗯嗯|好|好的|可以|谢谢|多谢|感谢|解决了|明白了|懂了|"
    "有帮助谢谢|好的谢谢|解决了谢谢|知道了|行".split("|")
)
_NO = frozenset(
    "no|n|nope|nah|no it did not|no it didn't|not really|not at all|didn't help|did not help|"
    "it didn't|it did not|not helpful|no thanks|useless|that didn't help|still not working|"
    "不|不是|没有|没|否|没有帮助|没帮助|没用|没有用|不行|不对|不是这个|还是不行|没解决|没有解决|"
    "不清楚|不明白|看不懂".split("|")
)
_PUNCT = re.compile(r"[\s!?.,;:~\"()\[\]，。！？、；：“”（）…]+")  # noqa: RUF001


def verdict(text: str) -> bool | None:
    """True for a "yes, it helped", False for a "no", None for anything else."""
    words = _PUNCT.sub(" ", normalize_text(text).replace("\u2019", "'")).strip()
    if not words:
        return None
    squeezed = words.replace(" ", "") if re.search(r"[\u3400-\u9fff]", words) else words
    for phrase in (words, squeezed):
        if phrase in _NO:
            return False
        if phrase in _YES:
            return True
    return None


def answer_texts(found: KnowledgeAnswer, lang: str) -> tuple[str, ...]:
    """The passage with its citation, then the question."""
    if lang == "zh":
        return (f"{found.text}\n（来自文章：《{found.title}》）", HELPED["zh"])  # noqa: RUF001
    return (f'{found.text}\n(From the article: "{found.title}")', HELPED["en"])


def reply_texts(helped: bool, lang: str) -> tuple[str, ...]:
    if lang == "zh":
        if helped:
            return ("很高兴能帮到您。还有其他问题吗？",)  # noqa: RUF001
        return ("抱歉没能帮到您，正在为您转接人工客服。",)  # noqa: RUF001
    if helped:
        return ("Glad it helped. Anything else I can do?",)
    return ("Sorry it did not help. I am passing you to a person from our team.",)


async def asked(
    kernel: Any,
    conversation: Conversation,
    seq: int,
    found: KnowledgeAnswer,
    lang: str,
    reply: BotReply,
) -> BotReply:
    """Keep what was asked on the conversation (``found``: the best passage, also for a
    generated answer); ``reply`` (ending with "did this help?") with its quick replies."""
    mark = {"article_id": found.article_id, "seq": seq, "lang": lang, "at": time.time()}
    conversation.meta = {**conversation.meta, ASKED: mark}
    await kernel.storage.update_conversation(conversation, if_state=BOT)
    return dataclasses.replace(reply, choices=CHOICES[lang])


def unasked(reply: BotReply, lang: str) -> BotReply:
    """``reply`` without its closing "did this help?" (the ``bot_kb_feedback`` enrichment
    shed under pressure): nothing is asked, so nothing is remembered on the conversation."""
    texts = reply.texts
    if texts and texts[-1] == HELPED.get(lang, HELPED["en"]):
        texts = texts[:-1]
    return dataclasses.replace(reply, texts=texts, choices=())


async def answered(
    kernel: Any, counts: dict, conversation: Conversation, seq: int, text: str, flow: Any
) -> BotReply | None:
    """The visitor's answer to "did this help?", recorded; None when the message is not
    one (or nothing was asked): the turn goes on as usual."""
    mark = conversation.meta.get(ASKED)
    if not isinstance(mark, dict):
        return None
    conversation.meta = {k: v for k, v in conversation.meta.items() if k != ASKED}
    helped = verdict(text)
    if helped is None:
        return None  # a new question; the caller's save drops the mark
    lang = mark.get("lang", "en")
    counts["knowledge_helped" if helped else "knowledge_not_helped"] += 1
    feedback = {"article_id": mark.get("article_id"), "helped": helped, "seq": seq}
    conversation.meta = {**conversation.meta, FEEDBACK: {**feedback, "at": time.time()}}
    await kernel.storage.update_conversation(conversation, if_state=BOT)
    await kernel.emit(
        "bot.knowledge_feedback", conversation.site_id, conversation_id=conversation.id, **feedback
    )
    if helped:
        return BotReply(reply_texts(True, lang))
    handoff = flow.spec.fallback.handoff if flow is not None else None
    department = handoff.department if handoff is not None else None
    return BotReply(reply_texts(False, lang), True, HANDOFF_REASON, department)
