"""One open conversation per visitor and conversation versions, on every backend."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from kefu.core.domain import ASSIGNED, QUEUED, RESOLVED, Conversation, Site, Visitor, new_id
from kefu.core.storage import DuplicateError


async def _visitor(storage) -> tuple[str, str]:
    site = await storage.create_site(Site(id=new_id(), name="Acme", widget_key=new_id()))
    visitor = await storage.upsert_visitor(Visitor(id=new_id(), site_id=site.id))
    return site.id, visitor.id


def _conv(site_id: str, visitor_id: str, **kw) -> Conversation:
    return Conversation(id=new_id(), site_id=site_id, visitor_id=visitor_id, **kw)


async def test_at_most_one_open_conversation_per_visitor(storage):
    site_id, visitor_id = await _visitor(storage)
    first = await storage.create_conversation(_conv(site_id, visitor_id))
    with pytest.raises(DuplicateError):
        await storage.create_conversation(_conv(site_id, visitor_id))
    # resolved ones do not count, and other visitors are not affected
    await storage.create_conversation(_conv(site_id, visitor_id, state=RESOLVED))
    await storage.create_conversation(_conv(site_id, new_id()))
    stored, created = await storage.open_conversation(_conv(site_id, visitor_id))
    assert (stored.id, created) == (first.id, False)
    first.state = RESOLVED
    assert await storage.update_conversation(first)
    fresh, created = await storage.open_conversation(_conv(site_id, visitor_id))
    assert created and fresh.id != first.id
    # reopening the first while the fresh one is open would make two
    again = await storage.get_conversation(site_id, first.id)
    again.state = QUEUED
    with pytest.raises(DuplicateError):
        await storage.update_conversation(again, if_state=RESOLVED)
    assert (await storage.get_conversation(site_id, first.id)).state == RESOLVED


async def test_concurrent_opens_in_two_connections_create_one(store, storage):
    rival = store.make()  # a second connection (pool, client) to the same data
    if rival is not storage:
        await rival.open()
    try:
        site_id, visitor_id = await _visitor(storage)
        results = await asyncio.gather(
            *(
                (storage if i % 2 else rival).open_conversation(_conv(site_id, visitor_id))
                for i in range(10)
            )
        )
        assert sum(created for _, created in results) == 1
        assert len({c.id for c, _ in results}) == 1
        listed = await storage.list_conversations(site_id, visitor_id=visitor_id)
        assert len(listed) == 1
    finally:
        if rival is not storage:
            await rival.close()


async def test_every_update_bumps_the_version_and_if_version_is_compare_and_set(store, storage):
    site_id, visitor_id = await _visitor(storage)
    conv = await storage.create_conversation(_conv(site_id, visitor_id))
    read = await storage.get_conversation(site_id, conv.id)
    v0 = read.version
    # two writers read the same version and change different meta keys
    a = dataclasses.replace(read, meta={**read.meta, "note": "a"})
    b = dataclasses.replace(read, meta={**read.meta, "tag": "b"})
    assert await storage.update_conversation(a, if_version=v0)
    assert not await storage.update_conversation(b, if_version=v0)  # would drop "note"
    now = await storage.get_conversation(site_id, conv.id)
    assert now.version == v0 + 1 and now.meta == {"note": "a"}
    b = dataclasses.replace(now, meta={**now.meta, "tag": "b"})
    assert await storage.update_conversation(b, if_version=now.version)
    after = await storage.get_conversation(site_id, conv.id)
    assert after.meta == {"note": "a", "tag": "b"} and after.version == v0 + 2
    # the version cannot be written directly, and unconditional writes bump it too
    forced = dataclasses.replace(after, version=1000, state=ASSIGNED, assignee_id="ag")
    assert await storage.update_conversation(forced)
    assert (await storage.get_conversation(site_id, conv.id)).version == v0 + 3
    # combined with the other conditions
    assert not await storage.update_conversation(after, if_state=QUEUED, if_version=v0 + 3)
    assert await storage.update_conversation(after, if_state=ASSIGNED, if_version=v0 + 3)

    rival = store.make()
    if rival is not storage:
        await rival.open()
    try:
        base = await storage.get_conversation(site_id, conv.id)

        async def edit(backend, i):
            changed = dataclasses.replace(base, meta={**base.meta, f"k{i}": i})
            return await backend.update_conversation(changed, if_version=base.version)

        wins = await asyncio.gather(*(edit(storage if i % 2 else rival, i) for i in range(10)))
        assert sum(wins) == 1
    finally:
        if rival is not storage:
            await rival.close()


async def test_a_conversation_moved_to_another_visitor_keeps_one_open_each(storage):
    """What merging two contacts relies on (plugins/rest_api/merge.py)."""
    site_id, ann = await _visitor(storage)
    bob = (await storage.upsert_visitor(Visitor(id=new_id(), site_id=site_id))).id
    open_one = await storage.create_conversation(_conv(site_id, ann))
    done = await storage.create_conversation(_conv(site_id, ann, state=RESOLVED))
    bobs = await storage.create_conversation(_conv(site_id, bob, state=RESOLVED))
    moved = dataclasses.replace(open_one, visitor_id=bob)
    assert await storage.update_conversation(moved, if_version=open_one.version)
    assert (await storage.get_conversation(site_id, open_one.id)).visitor_id == bob
    # ann has no open conversation any more: a new one may open; bob's is the moved one
    await storage.create_conversation(_conv(site_id, ann))
    with pytest.raises(DuplicateError):
        await storage.create_conversation(_conv(site_id, bob))
    # moving a second open one onto bob is refused; a resolved one moves
    back = await storage.list_conversations(site_id, visitor_id=ann, state=QUEUED)
    with pytest.raises(DuplicateError):
        await storage.update_conversation(dataclasses.replace(back[0], visitor_id=bob))
    assert await storage.update_conversation(dataclasses.replace(done, visitor_id=bob))
    listed = {c.id for c in await storage.list_conversations(site_id, visitor_id=bob)}
    assert listed == {open_one.id, done.id, bobs.id}
