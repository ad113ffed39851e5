"""The Searchable part of the storage contract (core.storage.Searchable), on every backend."""

from __future__ import annotations

from kefu.core.domain import ASSIGNED, QUEUED, RESOLVED, Conversation, Message, Visitor, new_id
from kefu.core.storage import ConversationFilter, Searchable

SITE, OTHER = "s-search", "s-other"


async def chat(storage, site_id: str, texts: list[str], *, t0: float = 1000.0, **kw):
    visitor = await storage.upsert_visitor(
        Visitor(
            id=new_id(), site_id=site_id, name=kw.pop("name", None), email=kw.pop("email", None)
        )
    )
    conv = await storage.create_conversation(
        Conversation(id=new_id(), site_id=site_id, visitor_id=visitor.id, created_at=t0, **kw)
    )
    for i, text in enumerate(texts):
        await storage.append_message(
            Message(
                site_id=site_id,
                conversation_id=conv.id,
                cid=new_id(),
                sender_kind="visitor",
                sender_id=visitor.id,
                text=text,
                created_at=t0 + i,
            )
        )
    return visitor, conv


async def test_messages_found_by_every_term_newest_first_in_the_site(storage):
    assert isinstance(storage, Searchable)
    _, a = await chat(storage, SITE, ["Where is my ORDER 4711?", "thanks"], t0=1000)
    _, b = await chat(storage, SITE, ["order status please", "你好，我的订单在哪里"], t0=2000)  # noqa: RUF001
    await chat(storage, OTHER, ["order 4711 from another site"], t0=3000)
    hits = await storage.search_messages(SITE, "order")
    assert [(m.conversation_id, m.seq) for m in hits] == [(b.id, 1), (a.id, 1)]
    assert [m.text for m in await storage.search_messages(SITE, "4711 order")] == [
        "Where is my ORDER 4711?"
    ]
    assert [m.seq for m in await storage.search_messages(SITE, "订单")] == [2]  # no spaces in CJK
    assert [m.seq for m in await storage.search_messages(SITE, "我的订单")] == [2]
    assert await storage.search_messages(SITE, "order missing-word") == []
    assert await storage.search_messages(SITE, "   ") == []
    assert await storage.search_messages(SITE, "%") == []  # a LIKE wildcard is a character
    assert [m.seq for m in await storage.search_messages(SITE, "der 47")] == [1]  # substrings
    older = await storage.search_messages(SITE, "order", before=2000)
    assert [m.conversation_id for m in older] == [a.id]
    assert len(await storage.search_messages(SITE, "order", limit=1)) == 1


async def test_contacts_found_and_listed(storage):
    ann, _ = await chat(storage, SITE, [], name="Ann Lee", email="ann@example.com")
    await storage.upsert_visitor(
        Visitor(id=new_id(), site_id=SITE, name="王芳", attributes={"plan": "Gold"}, last_seen_at=5)
    )
    await storage.upsert_visitor(Visitor(id=new_id(), site_id=OTHER, name="Ann Other"))
    assert [v.id for v in await storage.search_visitors(SITE, "ann")] == [ann.id]
    assert [v.id for v in await storage.search_visitors(SITE, "EXAMPLE.com ann")] == [ann.id]
    assert [v.name for v in await storage.search_visitors(SITE, "gold")] == ["王芳"]
    assert [v.name for v in await storage.search_visitors(SITE, "王")] == ["王芳"]
    assert await storage.search_visitors(SITE, "nobody") == []
    listed = await storage.list_visitors(SITE)
    assert [v.name for v in listed] == ["Ann Lee", "王芳"]  # newest last_seen_at first
    assert [v.name for v in await storage.list_visitors(SITE, before=listed[0].last_seen_at)] == [
        "王芳"
    ]


async def test_conversation_filters(storage):
    _, a = await chat(storage, SITE, [], t0=100, department="sales", tags=["vip", "refund"])
    _, b = await chat(storage, SITE, [], t0=200, state=ASSIGNED, assignee_id="ag1", tags=["vi"])
    _, c = await chat(storage, SITE, [], t0=300, state=RESOLVED, assignee_id="ag2")
    await chat(storage, OTHER, [], t0=100, department="sales")

    async def ids(**kw):
        return {x.id for x in await storage.find_conversations(SITE, ConversationFilter(**kw))}

    assert await ids() == {a.id, b.id, c.id}
    assert await ids(states=(QUEUED, ASSIGNED)) == {a.id, b.id}
    assert await ids(assignee_id="ag1") == {b.id}
    assert await ids(assignee_id="") == {a.id}  # unassigned
    assert await ids(department="sales") == {a.id}
    assert await ids(tag="vip") == {a.id}  # a whole tag, not a part of one
    assert await ids(tag="vi") == {b.id}
    assert await ids(since=200) == {b.id, c.id}
    assert await ids(since=100, until=300) == {a.id, b.id}
    assert await ids(ids=(a.id, c.id), states=(RESOLVED,)) == {c.id}
    assert await ids(ids=()) == set()
    assert await ids(visitor_ids=(b.visitor_id,)) == {b.id}
    first = await storage.find_conversations(SITE, ConversationFilter(), limit=2)
    assert len(first) == 2
    rest = await storage.find_conversations(SITE, ConversationFilter(), before=first[-1].updated_at)
    assert {x.id for x in first + rest} == {a.id, b.id, c.id}


async def test_redacted_message_leaves_the_index_keeps_its_place(storage):
    _, conv = await chat(storage, SITE, ["my card is 4242 4242", "ok"])
    assert await storage.redact_message(
        SITE, conv.id, 1, text="", meta={"deleted": {"by": "ag1", "at": 5.0}}
    )
    assert not await storage.redact_message(SITE, conv.id, 9, text="", meta={})
    assert not await storage.redact_message(OTHER, conv.id, 1, text="", meta={})
    assert await storage.search_messages(SITE, "4242") == []
    stored = await storage.list_messages(SITE, conv.id)
    assert [(m.seq, m.text, m.meta) for m in stored] == [
        (1, "", {"deleted": {"by": "ag1", "at": 5.0}}),
        (2, "ok", {}),
    ]


async def test_delete_visitor_erases_conversations_messages_and_index(storage):
    gone, conv = await chat(storage, SITE, ["secret alpha", "secret beta"], name="Erase Me")
    await storage.update_conversation(
        Conversation(**{**_fields(conv), "state": RESOLVED, "resolved_at": 2000.0})
    )
    _, conv2 = await chat(storage, SITE, ["third secret"], t0=3000)
    # the erased visitor's second (open) conversation
    second = await storage.create_conversation(
        Conversation(id=new_id(), site_id=SITE, visitor_id=gone.id)
    )
    kept, kept_conv = await chat(storage, SITE, ["secret kept"], name="Keep Me")
    assert await storage.delete_visitor(OTHER, gone.id) == -1
    assert await storage.delete_visitor(SITE, gone.id) == 2
    assert await storage.delete_visitor(SITE, gone.id) == -1
    assert await storage.get_visitor(SITE, gone.id) is None
    assert await storage.get_conversation(SITE, conv.id) is None
    assert await storage.get_conversation(SITE, second.id) is None
    assert await storage.list_messages(SITE, conv.id) == []
    assert {m.text for m in await storage.search_messages(SITE, "secret")} == {
        "third secret",
        "secret kept",
    }
    assert await storage.search_visitors(SITE, "erase") == []
    assert (await storage.get_visitor(SITE, kept.id)).name == "Keep Me"
    assert len(await storage.list_messages(SITE, kept_conv.id)) == 1
    assert conv2.id in {c.id for c in await storage.find_conversations(SITE, ConversationFilter())}


async def test_redaction_and_erasure_after_the_message_was_found(storage):
    """Once a search has seen a message (indexed), a redaction and an erasure still remove it."""
    gone, _ = await chat(storage, SITE, ["needle to erase"], name="Gone")
    _, conv = await chat(storage, SITE, ["needle to redact", "needle kept"], t0=2000)
    found = await storage.search_messages(SITE, "needle")
    assert [m.text for m in found] == ["needle kept", "needle to redact", "needle to erase"]
    assert await storage.redact_message(SITE, conv.id, 1, text="haystack now", meta={})
    assert await storage.delete_visitor(SITE, gone.id) == 1
    assert [m.text for m in await storage.search_messages(SITE, "needle")] == ["needle kept"]
    assert [m.text for m in await storage.search_messages(SITE, "haystack")] == ["haystack now"]


def _fields(conv: Conversation) -> dict:
    return {f: getattr(conv, f) for f in conv.__dataclass_fields__}


async def test_search_index_survives_reopen(durable_store):
    first = durable_store.make()
    await first.open()
    try:
        await chat(first, SITE, ["persisted needle"])
    finally:
        await first.close()
    again = durable_store.make()
    await again.open()
    try:
        assert [m.text for m in await again.search_messages(SITE, "needle")] == ["persisted needle"]
    finally:
        await again.close()
