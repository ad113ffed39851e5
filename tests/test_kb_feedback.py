"""The visitor's answer to the bot's "did this help?" after an answer from a help article
(plugins/bot_intents/kb_feedback.py): a yes or a no, typed or clicked, in English or
Chinese, is recorded (the bot's counters, ``meta.kb_feedback``, the per-article counts of
``GET /v1/kb/articles``); a no hands the conversation to people as the flow's fallback
handoff does; any other message is a new question."""

from __future__ import annotations

import pytest

from kefu.core.domain import BOT as BOT_STATE
from kefu.core.domain import QUEUED
from kefu.plugins.bot_intents import service_of as bot_of
from kefu.plugins.bot_intents.kb_feedback import HANDOFF_REASON, verdict
from kefu.plugins.knowledge_base import FEEDBACK_KIND
from tests.chat_support import app_kernel, login
from tests.routing_support import site_of, visitor
from tests.test_bot_faq import shop_flow_client
from tests.test_knowledge_base import ARTICLES, BOT


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Yes", True), ("yes, thanks!", True), ("Thank you", True), ("it helped", True),
     ("有帮助", True), ("是的", True), ("有", True), ("解决了，谢谢", True), ("好的 谢谢", True),  # noqa: RUF001
     ("No", False), ("nope.", False), ("Not really", False), ("didn't help", False),
     ("it didn’t", False), ("没有帮助", False), ("没有", False), ("不是", False), ("没用！", False),  # noqa: RUF001
     ("how do I return a parcel", None), ("有没有优惠券", None),
     ("no idea where my parcel is", None), ("", None), ("???", None)],
)  # fmt: skip
def test_verdict(text, expected):
    assert verdict(text) is expected


async def answer_then(guest, cid: str, question: str, reply: str) -> dict:
    """Ask a question an article answers, then answer "did this help?" with ``reply``."""
    await guest.peer.send(op="send", conversation_id=guest.conversation_id, cid=cid,
                          text=question)  # fmt: skip
    answer = await guest.peer.expect("message", within=10, sender=BOT)
    asked = await guest.peer.expect("message", within=10, sender=BOT)
    await guest.peer.send(op="send", conversation_id=guest.conversation_id, cid=cid + "-r",
                          text=reply)  # fmt: skip
    return {"answer": answer, "asked": asked}


async def test_did_this_help_recorded_and_no_hands_over(aiohttp_client, tmp_path):
    client, _ = await shop_flow_client(aiohttp_client, tmp_path)
    kernel = app_kernel(client.app)
    storage = kernel.storage
    site = await site_of(client)
    sid = site.site.id
    for article in ARTICLES:
        await storage.put_record(sid, "kb.article", article["id"],
                                 {k: article[k] for k in ("title", "body", "lang")})  # fmt: skip
    events: list = []
    original = kernel.emit

    async def spy(type, site_id=None, **data):
        events.append((type, data))
        await original(type, site_id, **data)

    kernel.emit = spy
    bot = bot_of(kernel)

    # yes: recorded, the bot stays
    guest = await visitor(client, site)
    await guest.peer.expect("message", sender=BOT)  # greeting
    seen = await answer_then(guest, "q1", "how long is the warranty", "yes, thanks!")
    assert '"Warranty and repairs"' in seen["answer"]["text"]
    assert seen["asked"]["text"] == "Did this help?"
    assert seen["asked"]["meta"]["choices"] == ["Yes", "No"]
    glad = await guest.peer.expect("message", within=10, sender=BOT)
    assert glad["text"].startswith("Glad it helped")
    stored = await storage.get_conversation(sid, guest.conversation_id)
    assert stored.state == BOT_STATE and "kb_asked" not in stored.meta
    assert stored.meta["kb_feedback"]["article_id"] == "warranty-en"
    assert stored.meta["kb_feedback"]["helped"] is True
    assert bot.counts["knowledge_helped"] == 1 and bot.counts["knowledge_not_helped"] == 0

    # a new question instead of an answer: no feedback, the turn goes on as usual
    await answer_then(guest, "q2", "do you take paypal", "do you ship to Canada")
    nxt = await guest.peer.expect("message", within=10, sender=BOT)
    assert not nxt["text"].startswith(("Glad", "Sorry it did not"))
    assert bot.counts["knowledge_helped"] == 1 and bot.counts["knowledge_not_helped"] == 0
    stored = await storage.get_conversation(sid, guest.conversation_id)
    assert stored.state == BOT_STATE
    assert stored.meta.get("kb_asked", {}).get("seq") != 3  # the first mark was dropped

    # no: recorded, handed over with the flow's fallback department
    guest = await visitor(client, site)
    await guest.peer.expect("message", sender=BOT)
    await answer_then(guest, "q3", "how long is the warranty", "No")
    sorry = await guest.peer.expect("message", within=10, sender=BOT)
    assert sorry["text"].startswith("Sorry it did not help")
    for _ in range(50):
        stored = await storage.get_conversation(sid, guest.conversation_id)
        if stored.state == QUEUED:
            break
        await guest.peer.quiet(0.1)
    assert stored.state == QUEUED
    assert stored.meta["bot_handoff"]["reason"] == HANDOFF_REASON
    handoffs = [d for t, d in events if t == "bot.handoff"]
    assert handoffs[-1]["reason"] == HANDOFF_REASON
    assert bot.counts["knowledge_not_helped"] == 1

    # Chinese: the buttons' own text, the reply in Chinese
    guest = await visitor(client, site)
    await guest.peer.expect("message", sender=BOT)
    seen = await answer_then(guest, "q4", "积分会过期吗", "没有帮助")
    assert seen["asked"]["meta"]["choices"] == ["有帮助", "没有帮助"]
    sorry = await guest.peer.expect("message", within=10, sender=BOT)
    assert sorry["text"].startswith("抱歉没能帮到您")

    feedback = [d for t, d in events if t == "bot.knowledge_feedback"]
    assert [(d["article_id"], d["helped"]) for d in feedback] == [
        ("warranty-en", True), ("warranty-en", False), ("member-zh", False)]  # fmt: skip
    record = await storage.get_record(sid, FEEDBACK_KIND, "warranty-en")
    assert record.data == {"helped": 1, "not_helped": 1}
    admin = {"Authorization": f"Bearer {await login(client, sid, site.admin.email)}"}
    listed = await (await client.get("/v1/kb/articles", headers=admin)).json()
    counts = {a["id"]: (a["helped"], a["not_helped"]) for a in listed["articles"]}
    assert counts["warranty-en"] == (1, 1) and counts["member-zh"] == (0, 1)
    assert counts["payment-en"] == (0, 0)
    one = await (await client.get("/v1/kb/articles/warranty-en", headers=admin)).json()
    assert (one["helped"], one["not_helped"]) == (1, 1)
