"""The Reportable part of the storage contract (core.reports), on every backend."""

from __future__ import annotations

from kefu.core.domain import ASSIGNED, BOT, QUEUED, RESOLVED, Conversation, Message, Visitor
from kefu.core.reports import ConversationFacts, Reportable

SITE, OTHER = "s-reports", "s-reports-other"


async def conversation(storage, site_id: str, conv_id: str, created_at: float, **kw):
    visitor = await storage.upsert_visitor(Visitor(id=f"v-{conv_id}", site_id=site_id))
    return await storage.create_conversation(
        Conversation(
            id=conv_id, site_id=site_id, visitor_id=visitor.id, created_at=created_at, **kw
        )
    )


async def say(storage, conv, kind: str, at: float, *, type: str = "text") -> None:
    await storage.append_message(
        Message(
            site_id=conv.site_id,
            conversation_id=conv.id,
            cid=f"{conv.id}-{at}",
            sender_kind=kind,
            sender_id=f"{kind}-1",
            type=type,
            text="hi",
            created_at=at,
        )
    )


async def fill(storage) -> list[ConversationFacts]:
    """Conversations of every kind a report counts; the facts every backend must give."""
    human = await conversation(
        storage, SITE, "c-human", 1000.0, state=RESOLVED, assignee_id="ag1",
        department="sales", resolved_at=1100.0,
        meta={"rating": {"score": 4, "scale": 5, "comment": None}, "notes": [{"text": "x"}]},
    )  # fmt: skip
    await say(storage, human, "visitor", 1001)
    await say(storage, human, "agent", 1005, type="event")  # an event is no reply
    await say(storage, human, "system", 1006)  # a notice counts for nobody
    await say(storage, human, "agent", 1030)
    await say(storage, human, "visitor", 1035)
    await say(storage, human, "agent", 1040)
    contained = await conversation(
        storage, SITE, "c-bot", 2000.0, state=RESOLVED, resolved_at=2060.0
    )
    await say(storage, contained, "bot", 2000.5)
    await say(storage, contained, "visitor", 2010)
    await say(storage, contained, "bot", 2011)
    # the same created_at as c-bot: ordered by id
    handed = await conversation(
        storage, SITE, "c-handoff", 2000.0, state=ASSIGNED, assignee_id="ag2",
        meta={"bot_handoff": {"reason": "asked", "at": 2050.0}, "bot": {"flow_id": "f"}},
    )  # fmt: skip
    await say(storage, handed, "bot", 2001)
    await say(storage, handed, "visitor", 2040)
    await say(storage, handed, "agent", 2080)
    await conversation(storage, SITE, "c-quiet", 3000.0, state=QUEUED, department="support")
    await conversation(storage, SITE, "c-before", 999.0, state=BOT)  # outside the range
    await conversation(storage, SITE, "c-until", 4000.0, state=BOT)  # until is excluded
    await conversation(storage, OTHER, "c-other", 1500.0, state=QUEUED)  # another site
    return [
        ConversationFacts(
            "c-human", 1000.0, RESOLVED, agent_id="ag1", department="sales",
            resolved_at=1100.0, first_agent_reply_at=1030.0, rating=4, rating_scale=5,
            visitor_messages=2, agent_messages=2,
        ),
        ConversationFacts(
            "c-bot", 2000.0, RESOLVED, resolved_at=2060.0, visitor_messages=1, bot_messages=2
        ),
        ConversationFacts(
            "c-handoff", 2000.0, ASSIGNED, agent_id="ag2", first_agent_reply_at=2080.0,
            handoff_at=2050.0, visitor_messages=1, agent_messages=1, bot_messages=1,
        ),
        ConversationFacts("c-quiet", 3000.0, QUEUED, department="support"),
    ]  # fmt: skip


async def test_facts_of_the_sites_conversations_in_the_range(storage):
    assert isinstance(storage, Reportable)
    expected = await fill(storage)
    facts = await storage.conversation_facts(SITE, 1000.0, 4000.0)
    assert facts == expected
    human, bot, handoff, quiet = facts
    assert not human.bot_handled and not human.contained
    assert bot.bot_handled and bot.contained
    assert handoff.bot_handled and not handoff.contained and handoff.answered_from == 2050.0
    assert not quiet.bot_handled and quiet.answered_from == 3000.0
    assert await storage.conversation_facts(OTHER, 1000.0, 4000.0) == [
        ConversationFacts("c-other", 1500.0, QUEUED)
    ]
    assert await storage.conversation_facts(SITE, 5000.0, 6000.0) == []
    assert await storage.conversation_facts("s-none", 0.0, 1e12) == []


async def test_facts_page_by_creation_then_id(storage):
    expected = await fill(storage)
    first = await storage.conversation_facts(SITE, 1000.0, 4000.0, limit=2)
    assert first == expected[:2]  # the page ends between two conversations of one instant
    last = first[-1]
    rest = await storage.conversation_facts(
        SITE, 1000.0, 4000.0, after=(last.created_at, last.conversation_id), limit=2
    )
    assert rest == expected[2:]
    tail = rest[-1]
    assert (
        await storage.conversation_facts(
            SITE, 1000.0, 4000.0, after=(tail.created_at, tail.conversation_id)
        )
        == []
    )
    assert await storage.conversation_facts(SITE, 1000.0, 4000.0, limit=0) == []


async def test_facts_follow_later_writes(storage):
    await fill(storage)
    quiet = await storage.get_conversation(SITE, "c-quiet")
    quiet.state, quiet.assignee_id, quiet.resolved_at = RESOLVED, "ag1", 3300.0
    quiet.meta = {**quiet.meta, "rating": {"score": 1, "scale": 5}}
    assert await storage.update_conversation(quiet)
    await say(storage, quiet, "agent", 3100)
    (facts,) = await storage.conversation_facts(SITE, 3000.0, 3001.0)
    assert facts == ConversationFacts(
        "c-quiet", 3000.0, RESOLVED, agent_id="ag1", department="support", resolved_at=3300.0,
        first_agent_reply_at=3100.0, rating=1, rating_scale=5, agent_messages=1,
    )  # fmt: skip
