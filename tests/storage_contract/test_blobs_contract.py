"""The file-contents part of the storage contract (``core.storage.BlobStore``), on every backend."""

from __future__ import annotations

import os

import pytest

from kefu.core.storage import BlobInfo, BlobStore, DuplicateError


async def test_every_backend_keeps_blobs(storage):
    assert isinstance(storage, BlobStore)


async def test_put_read_info_delete(storage):
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    info = await storage.put_blob("s1", "abc-p.png", data, mime="image/png")
    assert isinstance(info, BlobInfo)
    assert (info.site_id, info.id, info.size, info.mime) == (
        "s1",
        "abc-p.png",
        len(data),
        "image/png",
    )
    got = await storage.blob_info("s1", "abc-p.png")
    assert (got.size, got.mime) == (len(data), "image/png")
    assert got.created_at == pytest.approx(info.created_at, abs=1e-3)
    found = await storage.get_blob("s1", "abc-p.png")
    assert found is not None
    assert found[0].size == len(data) and found[1] == data
    assert isinstance(found[1], bytes)
    assert await storage.delete_blob("s1", "abc-p.png")
    assert await storage.get_blob("s1", "abc-p.png") is None
    assert await storage.blob_info("s1", "abc-p.png") is None
    assert not await storage.delete_blob("s1", "abc-p.png")


async def test_written_once_and_scoped_by_site(storage):
    await storage.put_blob("s1", "x", b"first", mime="text/plain")
    with pytest.raises(DuplicateError):
        await storage.put_blob("s1", "x", b"second", mime="text/plain")
    assert (await storage.get_blob("s1", "x"))[1] == b"first"
    assert await storage.get_blob("s2", "x") is None  # another site's blob is "not found"
    assert await storage.blob_info("s2", "x") is None
    assert not await storage.delete_blob("s2", "x")
    await storage.put_blob("s2", "x", b"other site", mime="text/plain")  # same id, other site
    assert (await storage.get_blob("s1", "x"))[1] == b"first"
    assert (await storage.get_blob("s2", "x"))[1] == b"other site"


async def test_large_and_empty_blobs_round_trip(storage):
    # past MongoDB's 16 MiB document limit and its 1 MiB chunks; every byte value
    big = os.urandom(17 * 1024 * 1024 + 5)
    await storage.put_blob("s1", "big", big, mime="application/pdf")
    assert (await storage.blob_info("s1", "big")).size == len(big)
    assert (await storage.get_blob("s1", "big"))[1] == big
    await storage.put_blob("s1", "empty", b"", mime="text/plain")
    assert (await storage.get_blob("s1", "empty"))[1] == b""
    assert await storage.delete_blob("s1", "big")
    assert await storage.get_blob("s1", "big") is None


async def test_blobs_survive_reopening(durable_store):
    backend = durable_store.make()
    await backend.open()
    try:
        await backend.put_blob("s1", "kept", b"\x00\xffbytes", mime="application/pdf")
    finally:
        await backend.close()
    again = durable_store.make()
    await again.open()
    try:
        info, data = await again.get_blob("s1", "kept")
        assert (info.mime, data) == ("application/pdf", b"\x00\xffbytes")
    finally:
        await again.close()


async def test_read_blob_reads_a_slice(storage):
    data = bytes(range(256)) * 3
    await storage.put_blob("s1", "r", data, mime="application/pdf")
    assert await storage.read_blob("s1", "r", 0, 10) == data[:10]
    assert await storage.read_blob("s1", "r", 250, 20) == data[250:270]
    assert await storage.read_blob("s1", "r", 760, 100) == data[760:]  # short at the end
    assert await storage.read_blob("s1", "r", len(data), 5) == b""
    assert await storage.read_blob("s1", "r", len(data) + 9, 5) == b""
    assert await storage.read_blob("s1", "r", 3, 0) == b""
    got = await storage.read_blob("s1", "r", 0, len(data))
    assert got == data and isinstance(got, bytes)
    assert await storage.read_blob("s1", "missing", 0, 5) is None
    assert await storage.read_blob("s2", "r", 0, 5) is None  # scoped by site
    await storage.put_blob("s1", "e", b"", mime="text/plain")
    assert await storage.read_blob("s1", "e", 0, 5) == b""
    assert await storage.delete_blob("s1", "r")
    assert await storage.read_blob("s1", "r", 0, 5) is None


async def test_read_blob_across_chunk_boundaries(storage):
    # MongoDB keeps 1 MiB chunks: a slice over two of them, and one inside the last
    mib = 1024 * 1024
    data = os.urandom(2 * mib + 100)
    await storage.put_blob("s1", "c", data, mime="application/pdf")
    assert await storage.read_blob("s1", "c", mib - 7, 20) == data[mib - 7 : mib + 13]
    assert await storage.read_blob("s1", "c", 2 * mib + 50, 1000) == data[2 * mib + 50 :]
    assert await storage.read_blob("s1", "c", 5, 2 * mib) == data[5 : 5 + 2 * mib]


async def test_the_uploader_is_kept_and_their_blobs_listed(storage):
    alice, bob = "visitor:alice", "agent:bob"
    info = await storage.put_blob("s1", "b-2", b"two", mime="text/plain", owner=alice)
    assert info.owner == alice
    await storage.put_blob("s1", "b-1", b"one", mime="text/plain", owner=alice)
    await storage.put_blob("s1", "b-3", b"bob's", mime="text/plain", owner=bob)
    await storage.put_blob("s1", "b-4", b"nobody's", mime="text/plain")
    await storage.put_blob("s2", "b-5", b"other site", mime="text/plain", owner=alice)
    assert (await storage.blob_info("s1", "b-2")).owner == alice
    assert (await storage.get_blob("s1", "b-3"))[0].owner == bob
    assert (await storage.blob_info("s1", "b-4")).owner == ""
    assert await storage.owned_blobs("s1", alice) == ["b-1", "b-2"]  # in id order
    assert await storage.owned_blobs("s1", alice, limit=1) == ["b-1"]
    assert await storage.owned_blobs("s2", alice) == ["b-5"]  # scoped by site
    assert await storage.owned_blobs("s1", bob) == ["b-3"]
    assert await storage.owned_blobs("s1", "") == []  # no owner is nobody's list
    assert await storage.delete_blob("s1", "b-1")
    assert await storage.owned_blobs("s1", alice) == ["b-2"]
