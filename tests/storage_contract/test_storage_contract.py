"""The storage contract: the same tests against every backend (see conftest.py)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from kefu.core.domain import (
    ASSIGNED,
    QUEUED,
    RESOLVED,
    Agent,
    Conversation,
    Message,
    Site,
    Visitor,
    new_id,
)
from kefu.core.storage import DuplicateError, StorageBackend, StorageError


def site(**kw) -> Site:
    return Site(id=new_id(), name=kw.pop("name", "Acme"), widget_key=new_id(), **kw)


def agent(site_id: str, email: str, **kw) -> Agent:
    return Agent(id=new_id(), site_id=site_id, email=email, name="Ann", password_hash="h", **kw)


async def conversation(storage: StorageBackend, site_id: str, **kw) -> Conversation:
    visitor = await storage.upsert_visitor(Visitor(id=new_id(), site_id=site_id))
    return await storage.create_conversation(
        Conversation(id=new_id(), site_id=site_id, visitor_id=visitor.id, **kw)
    )


def message(conv: Conversation, cid: str | None = None, **kw) -> Message:
    return Message(
        site_id=conv.site_id,
        conversation_id=conv.id,
        cid=cid or new_id(),
        sender_kind="visitor",
        sender_id=conv.visitor_id,
        **kw,
    )


async def test_implements_the_protocol_and_pings(storage):
    assert isinstance(storage, StorageBackend)
    await storage.ping()


async def test_sites(storage):
    a = await storage.create_site(site(settings={"theme": {"color": "#123"}}))
    b = await storage.create_site(site(name="Beta", created_at=a.created_at + 1))
    assert await storage.get_site(a.id) == a
    assert await storage.get_site_by_widget_key(b.widget_key) == b
    assert await storage.get_site("nope") is None
    assert await storage.get_site_by_widget_key("nope") is None
    listed = [s.id for s in await storage.list_sites()]
    assert listed.index(a.id) < listed.index(b.id)
    with pytest.raises(DuplicateError):
        await storage.create_site(dataclasses.replace(site(), widget_key=a.widget_key))
    with pytest.raises(DuplicateError):
        await storage.create_site(dataclasses.replace(a, widget_key=new_id()))
    assert await storage.update_site(dataclasses.replace(a, name="Acme 2"))
    assert (await storage.get_site(a.id)).name == "Acme 2"
    with pytest.raises(DuplicateError):
        await storage.update_site(dataclasses.replace(a, widget_key=b.widget_key))
    assert not await storage.update_site(site())


async def test_agents_are_scoped_and_emails_unique_per_site(storage):
    s1, s2 = await storage.create_site(site()), await storage.create_site(site())
    ann = await storage.create_agent(agent(s1.id, "Ann@Example.com", roles=["admin", "agent"]))
    assert await storage.get_agent(s1.id, ann.id) == ann
    assert await storage.get_agent(s2.id, ann.id) is None
    assert await storage.get_agent_by_email(s1.id, " ann@example.COM") == ann
    assert await storage.get_agent_by_email(s2.id, "ann@example.com") is None
    with pytest.raises(DuplicateError):
        await storage.create_agent(agent(s1.id, "ann@example.com"))
    other = await storage.create_agent(agent(s2.id, "ann@example.com"))  # other site: fine
    bob = await storage.create_agent(agent(s1.id, "bob@example.com", created_at=ann.created_at + 1))
    assert [a.id for a in await storage.list_agents(s1.id)] == [ann.id, bob.id]
    assert [a.id for a in await storage.list_agents(s2.id)] == [other.id]
    assert await storage.update_agent(dataclasses.replace(bob, status="online", skills=["fr"]))
    assert (await storage.get_agent(s1.id, bob.id)).skills == ["fr"]
    with pytest.raises(DuplicateError):
        await storage.update_agent(dataclasses.replace(bob, email="ANN@example.com"))
    assert not await storage.update_agent(dataclasses.replace(bob, site_id=s2.id))
    assert (await storage.get_agent(s1.id, bob.id)).status == "online"


async def test_visitors_upsert_and_scope(storage):
    s1, s2 = await storage.create_site(site()), await storage.create_site(site())
    first = Visitor(id=new_id(), site_id=s1.id, referrer="https://r", attributes={"plan": "pro"})
    stored = await storage.upsert_visitor(first)
    assert stored == first and await storage.get_visitor(s1.id, first.id) == first
    assert await storage.get_visitor(s2.id, first.id) is None
    again = dataclasses.replace(first, name="Vi", created_at=first.created_at + 50)
    stored = await storage.upsert_visitor(again)
    assert stored.name == "Vi" and stored.created_at == first.created_at
    assert await storage.get_visitor(s1.id, first.id) == stored


async def test_conversations_scope_filters_and_pages(storage):
    s1, s2 = await storage.create_site(site()), await storage.create_site(site())
    states = [RESOLVED, QUEUED] * 3
    convs = [
        await conversation(storage, s1.id, updated_at=1000.0 + i, state=state)
        for i, state in enumerate(states[:5])
    ]
    foreign = await conversation(storage, s2.id)
    assert await storage.get_conversation(s1.id, convs[0].id) == convs[0]
    assert await storage.get_conversation(s2.id, convs[0].id) is None
    assert await storage.get_conversation(s1.id, foreign.id) is None
    newest_first = [c.id for c in reversed(convs)]
    assert [c.id for c in await storage.list_conversations(s1.id)] == newest_first
    assert [c.id for c in await storage.list_conversations(s2.id)] == [foreign.id]
    queued = await storage.list_conversations(s1.id, state=QUEUED)
    assert [c.id for c in queued] == [convs[3].id, convs[1].id]
    page = await storage.list_conversations(s1.id, limit=2, before=convs[3].updated_at)
    assert [c.id for c in page] == [convs[2].id, convs[1].id]
    mine = await storage.list_conversations(s1.id, visitor_id=convs[4].visitor_id)
    assert [c.id for c in mine] == [convs[4].id]
    with pytest.raises(DuplicateError):
        await storage.create_conversation(convs[0])


async def test_update_conversation_compare_and_set(storage):
    s1 = await storage.create_site(site())
    conv = await conversation(storage, s1.id, tags=["vip"])
    claim = dataclasses.replace(conv, state=ASSIGNED, assignee_id="a1", meta={"k": [1]})
    assert not await storage.update_conversation(claim, if_state=RESOLVED)
    assert not await storage.update_conversation(claim, if_assignee="someone")
    assert await storage.update_conversation(claim, if_state=QUEUED, if_assignee=None)
    assert await storage.get_conversation(s1.id, conv.id) == claim
    assert not await storage.update_conversation(claim, if_assignee=None)  # taken now
    assert await storage.update_conversation(dataclasses.replace(claim, priority=3))
    assert not await storage.update_conversation(dataclasses.replace(claim, site_id="other"))
    assert not await storage.update_conversation(dataclasses.replace(claim, id=new_id()))


async def test_update_conversation_never_writes_last_seq(storage):
    conv = await conversation(storage, (await storage.create_site(site())).id)
    await storage.append_message(message(conv))
    stale = await storage.get_conversation(conv.site_id, conv.id)
    await storage.append_message(message(conv))
    assert await storage.update_conversation(dataclasses.replace(stale, last_seq=0, priority=9))
    stored = await storage.get_conversation(conv.site_id, conv.id)
    assert stored.last_seq == 2 and stored.priority == 9


async def test_two_concurrent_claims_exactly_one_wins(store, storage):
    conv = await conversation(storage, (await storage.create_site(site())).id)
    rival = store.make()  # a second connection (pool, client) to the same data
    await rival.open()
    try:
        for attempt in range(5):  # several rounds: a lucky interleaving must not pass
            claims = [
                backend.update_conversation(
                    dataclasses.replace(conv, state=ASSIGNED, assignee_id=f"agent-{i}"),
                    if_state=QUEUED,
                    if_assignee=None,
                )
                for i, backend in enumerate([storage, rival] * 2)
            ]
            results = await asyncio.gather(*claims)
            assert sorted(results) == [False, False, False, True], attempt
            winner = f"agent-{results.index(True)}"
            assert (await storage.get_conversation(conv.site_id, conv.id)).assignee_id == winner
            assert await storage.update_conversation(conv)  # back to queued, unassigned
    finally:
        if rival is not storage:
            await rival.close()


async def test_append_assigns_seq_and_keeps_fields(storage):
    conv = await conversation(storage, (await storage.create_site(site())).id)
    sent = message(
        conv,
        type="image",
        text="look",
        attachment={"url": "/u/1.png", "size": 12, "mime": "image/png"},
        meta={"lang": "en", "n": [1, 2]},
        created_at=conv.updated_at + 10,
    )
    stored, created = await storage.append_message(sent)
    assert created and stored.seq == 1 and sent.seq == 0  # the caller's object is untouched
    assert stored == dataclasses.replace(sent, seq=1)
    for expected in (2, 3):
        stored, created = await storage.append_message(message(conv))
        assert created and stored.seq == expected
    after = await storage.get_conversation(conv.site_id, conv.id)
    assert after.last_seq == 3 and after.updated_at >= sent.created_at
    listed = await storage.list_messages(conv.site_id, conv.id)
    assert listed[0] == dataclasses.replace(sent, seq=1)


async def test_resent_cid_returns_the_same_seq_and_stores_once(storage):
    conv = await conversation(storage, (await storage.create_site(site())).id)
    other = await conversation(storage, conv.site_id)
    first, created = await storage.append_message(message(conv, "cid-1", text="hi"))
    await storage.append_message(message(conv, "cid-2"))
    again, created_again = await storage.append_message(message(conv, "cid-1", text="changed"))
    assert created and not created_again
    assert again == first and again.text == "hi"
    assert [m.cid for m in await storage.list_messages(conv.site_id, conv.id)] == ["cid-1", "cid-2"]
    elsewhere, created = await storage.append_message(message(other, "cid-1"))
    assert created and elsewhere.seq == 1  # a cid is scoped to its conversation
    assert (await storage.get_conversation(conv.site_id, conv.id)).last_seq == 2


async def test_append_to_missing_or_foreign_conversation_fails(storage):
    s1, s2 = await storage.create_site(site()), await storage.create_site(site())
    conv = await conversation(storage, s1.id)
    with pytest.raises(StorageError):
        await storage.append_message(dataclasses.replace(message(conv), conversation_id="nope"))
    with pytest.raises(StorageError):
        await storage.append_message(dataclasses.replace(message(conv), site_id=s2.id))
    ok, created = await storage.append_message(message(conv))  # the batch goes on
    assert created and ok.seq == 1
    assert await storage.list_messages(s2.id, conv.id) == []


async def test_a_bad_append_fails_alone_in_its_batch(storage):
    conv = await conversation(storage, (await storage.create_site(site())).id)
    missing = dataclasses.replace(message(conv), conversation_id="nope")
    unstorable = message(conv, meta={"when": object()})
    results = await asyncio.gather(
        *(storage.append_message(m) for m in (missing, message(conv), unstorable, message(conv))),
        return_exceptions=True,
    )
    assert isinstance(results[0], StorageError) and isinstance(results[2], StorageError)
    assert sorted(r[0].seq for r in (results[1], results[3])) == [1, 2]
    assert len(await storage.list_messages(conv.site_id, conv.id)) == 2


async def test_200_concurrent_appends_get_seqs_1_to_200(store, storage):
    conv = await conversation(storage, (await storage.create_site(site())).id)
    rival = store.make()  # half of the writers go through a second connection
    await rival.open()
    try:
        sent = [message(conv, f"c{i}") for i in range(200)]
        resent = sent[::4]  # re-sends racing with their originals
        results = await asyncio.gather(
            *((storage if i % 2 else rival).append_message(m) for i, m in enumerate(sent + resent))
        )
    finally:
        if rival is not storage:
            await rival.close()
    by_cid: dict[str, int] = {}
    for stored, _ in results:
        assert by_cid.setdefault(stored.cid, stored.seq) == stored.seq
    assert sorted(by_cid.values()) == list(range(1, 201))
    assert sum(created for _, created in results) == 200
    listed = await storage.list_messages(conv.site_id, conv.id, limit=500)
    assert [m.seq for m in listed] == list(range(1, 201))
    assert {m.cid: m.seq for m in listed} == by_cid
    assert (await storage.get_conversation(conv.site_id, conv.id)).last_seq == 200


async def test_list_messages_after_seq_and_history_pages(storage):
    s1, s2 = await storage.create_site(site()), await storage.create_site(site())
    conv = await conversation(storage, s1.id)
    for _ in range(10):
        await storage.append_message(message(conv))
    seqs = lambda found: [m.seq for m in found]  # noqa: E731
    assert seqs(await storage.list_messages(s1.id, conv.id, after_seq=7)) == [8, 9, 10]
    assert seqs(await storage.list_messages(s1.id, conv.id, after_seq=2, limit=3)) == [3, 4, 5]
    assert await storage.list_messages(s1.id, conv.id, after_seq=10) == []
    assert await storage.list_messages(s2.id, conv.id) == []
    page = await storage.list_messages_before(s1.id, conv.id, before_seq=11, limit=4)
    assert seqs(page) == [7, 8, 9, 10]
    page = await storage.list_messages_before(s1.id, conv.id, before_seq=page[0].seq, limit=4)
    assert seqs(page) == [3, 4, 5, 6]
    page = await storage.list_messages_before(s1.id, conv.id, before_seq=page[0].seq, limit=4)
    assert seqs(page) == [1, 2]
    assert await storage.list_messages_before(s1.id, conv.id, before_seq=1) == []
    assert await storage.list_messages_before(s2.id, conv.id, before_seq=11) == []


async def test_data_survives_close_and_reopen(durable_store):
    store = durable_store
    assert store.durable
    first = store.make()
    await first.open()
    s1 = await first.create_site(site())
    ann = await first.create_agent(agent(s1.id, "ann@example.com"))
    conv = await conversation(first, s1.id)
    acked = [(await first.append_message(message(conv)))[0] for _ in range(3)]
    await first.close()
    second = store.make()
    await second.open()
    try:
        assert await second.get_site(s1.id) == s1
        assert await second.get_agent(s1.id, ann.id) == ann
        assert (await second.get_conversation(s1.id, conv.id)).last_seq == 3
        assert await second.list_messages(s1.id, conv.id) == acked
        stored, created = await second.append_message(message(conv))
        assert created and stored.seq == 4
    finally:
        await second.close()
