"""The plugin-records part of the storage contract (``core.storage.Record``), on every backend."""

from __future__ import annotations

import asyncio

import pytest

from kefu.core.storage import INSTALL, Record, StorageError, VersionConflict

KIND = "test.doc"


async def test_create_read_replace_with_versions(storage):
    data = {"title": "Hi", "n": [1, 2]}
    created = await storage.put_record("s1", KIND, "a", data, expect_version=0)
    assert (created.version, created.data) == (1, {"title": "Hi", "n": [1, 2]})
    got = await storage.get_record("s1", KIND, "a")
    assert isinstance(got, Record)
    assert (got.site_id, got.kind, got.id, got.version) == ("s1", KIND, "a", 1)
    assert got.data == created.data
    with pytest.raises(VersionConflict):
        await storage.put_record("s1", KIND, "a", {"title": "again"}, expect_version=0)
    replaced = await storage.put_record("s1", KIND, "a", {"title": "v2"}, expect_version=1)
    assert (replaced.version, replaced.data) == (2, {"title": "v2"})
    with pytest.raises(VersionConflict):  # a stale writer
        await storage.put_record("s1", KIND, "a", {"title": "stale"}, expect_version=1)
    with pytest.raises(VersionConflict):  # replacing what does not exist
        await storage.put_record("s1", KIND, "nope", {}, expect_version=3)
    assert (await storage.get_record("s1", KIND, "a")).data == {"title": "v2"}
    forced = await storage.put_record("s1", KIND, "a", {"title": "v3"})  # unconditional
    assert forced.version == 3
    first = await storage.put_record("s1", KIND, "b", {"x": None})  # unconditional create
    assert first.version == 1
    assert await storage.get_record("s1", KIND, "missing") is None


async def test_records_are_scoped_by_site_and_kind(storage):
    await storage.put_record("s1", KIND, "a", {"v": 1})
    await storage.put_record(INSTALL, KIND, "a", {"v": "install"})
    await storage.put_record("s1", "other.kind", "a", {"v": "other"})
    assert await storage.get_record("s2", KIND, "a") is None
    assert (await storage.get_record(INSTALL, KIND, "a")).data == {"v": "install"}
    assert (await storage.get_record("s1", "other.kind", "a")).data == {"v": "other"}
    assert [r.id for r in await storage.list_records("s2", KIND)] == []
    assert not await storage.delete_record("s2", KIND, "a")
    assert (await storage.get_record("s1", KIND, "a")).data == {"v": 1}


async def test_list_in_code_point_order_with_prefix_and_pages(storage):
    ids = ["b", "a", "B", "é", "a/2", "a/10", "a/1", "a%", "a_", "z"]
    for i in ids:
        await storage.put_record("s1", KIND, i, {"id": i})
    await storage.put_record("s1", "other.kind", "a/3", {})
    every = await storage.list_records("s1", KIND, limit=100)
    assert [r.id for r in every] == sorted(ids)  # code-point order
    assert all(r.data == {"id": r.id} for r in every)
    assert [r.id for r in await storage.list_records("s1", KIND, prefix="a/")] == [
        "a/1",
        "a/10",
        "a/2",
    ]
    # LIKE-style wildcards in a prefix are plain characters
    assert [r.id for r in await storage.list_records("s1", KIND, prefix="a%")] == ["a%"]
    assert [r.id for r in await storage.list_records("s1", KIND, prefix="a_")] == ["a_"]
    pages, after = [], ""
    while page := await storage.list_records("s1", KIND, after=after, limit=3):
        pages.append([r.id for r in page])
        after = page[-1].id
    assert [i for p in pages for i in p] == sorted(ids)
    assert all(len(p) <= 3 for p in pages)
    assert await storage.list_records("s1", KIND, limit=0) == []


async def test_delete_with_and_without_a_version(storage):
    await storage.put_record("s1", KIND, "a", {})
    await storage.put_record("s1", KIND, "a", {"n": 2})
    with pytest.raises(VersionConflict):
        await storage.delete_record("s1", KIND, "a", expect_version=1)
    with pytest.raises(VersionConflict):  # "only while absent" on a record that exists
        await storage.delete_record("s1", KIND, "a", expect_version=0)
    assert await storage.get_record("s1", KIND, "a") is not None
    assert await storage.delete_record("s1", KIND, "a", expect_version=2)
    assert not await storage.delete_record("s1", KIND, "a")
    assert not await storage.delete_record("s1", KIND, "a", expect_version=0)
    with pytest.raises(VersionConflict):
        await storage.delete_record("s1", KIND, "a", expect_version=2)
    again = await storage.put_record("s1", KIND, "a", {}, expect_version=0)
    assert again.version == 1  # a deleted record starts over


async def test_values_not_json_are_refused_and_records_are_copies(storage):
    with pytest.raises(StorageError):
        await storage.put_record("s1", KIND, "bad", {"when": object()})
    assert await storage.get_record("s1", KIND, "bad") is None
    data = {"nested": {"list": [1]}, "key.with.dots": 1, "$dollar": 2, "中文": "好"}
    stored = await storage.put_record("s1", KIND, "a", data)
    data["nested"]["list"].append(2)
    stored.data["nested"]["list"].append(3)
    assert (await storage.get_record("s1", KIND, "a")).data == {
        "nested": {"list": [1]},
        "key.with.dots": 1,
        "$dollar": 2,
        "中文": "好",
    }


async def test_concurrent_compare_and_set_has_one_winner(store, storage):
    rival = store.make()  # a second connection (pool, client) to the same data
    if rival is not storage:
        await rival.open()
    try:
        await storage.put_record("s1", KIND, "counter", {"n": 0}, expect_version=0)

        async def attempt(backend, n):
            try:
                return await backend.put_record("s1", KIND, "counter", {"n": n}, expect_version=1)
            except VersionConflict:
                return None

        results = await asyncio.gather(
            *(attempt(storage if i % 2 else rival, i) for i in range(20))
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1 and winners[0].version == 2
        assert (await rival.get_record("s1", KIND, "counter")).data == winners[0].data

        # unconditional writes never lose a version: 20 writes, 20 increments
        await asyncio.gather(
            *(
                (storage if i % 2 else rival).put_record("s1", KIND, "free", {"i": i})
                for i in range(20)
            )
        )
        assert (await storage.get_record("s1", KIND, "free")).version == 20
    finally:
        if rival is not storage:
            await rival.close()


async def test_records_survive_close_and_reopen(durable_store):
    first = durable_store.make()
    await first.open()
    await first.put_record("s1", KIND, "kept", {"v": [1, "二"]})
    await first.close()
    second = durable_store.make()
    await second.open()
    try:
        got = await second.get_record("s1", KIND, "kept")
        assert got is not None and got.data == {"v": [1, "二"]} and got.version == 1
    finally:
        await second.close()
