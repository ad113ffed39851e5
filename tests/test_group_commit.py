"""kefu.core.storage.GroupCommit: concurrent items share a flush; the window gathers larger
batches only under load (an item that finds the writer idle is flushed at once)."""

from __future__ import annotations

import asyncio
import time

from kefu.core.storage import GroupCommit


class Flusher:
    """A flush that takes ``delay`` seconds and records every batch it was given."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.batches: list[list[str]] = []
        self.started = asyncio.Event()

    async def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        self.started.set()
        await asyncio.sleep(self.delay)
        return [f"ok:{item}" for item in items]


async def test_an_item_that_finds_the_writer_idle_is_flushed_without_the_window():
    flush = Flusher(0.0)
    commit = GroupCommit(flush, window=5.0, name="test-idle")
    started = time.monotonic()
    assert await commit.submit("a") == "ok:a"
    assert time.monotonic() - started < 2.5  # not the 5 s window
    assert flush.batches == [["a"]]
    await commit.close()


async def test_items_queued_during_a_flush_wait_the_window_and_share_the_next_batch():
    flush = Flusher(0.05)
    commit = GroupCommit(flush, window=0.5, name="test-busy")
    first = asyncio.create_task(commit.submit("a"))
    await flush.started.wait()  # "a" is being flushed
    second = asyncio.create_task(commit.submit("b"))
    await first
    # "a" is committed and "b" waits the window; "c" arrives inside it and joins "b"
    third = asyncio.create_task(commit.submit("c"))
    assert await asyncio.gather(second, third) == ["ok:b", "ok:c"]
    assert flush.batches == [["a"], ["b", "c"]]
    await commit.close()


async def test_without_a_window_the_next_batch_closes_when_the_flush_ends():
    flush = Flusher(0.05)
    commit = GroupCommit(flush, name="test-nowindow")
    first = asyncio.create_task(commit.submit("a"))
    await flush.started.wait()
    second = asyncio.create_task(commit.submit("b"))
    await first
    await asyncio.sleep(0)  # "b" goes to the flush at once
    third = asyncio.create_task(commit.submit("c"))  # arrives while "b" is flushed
    assert await asyncio.gather(second, third) == ["ok:b", "ok:c"]
    assert flush.batches == [["a"], ["b"], ["c"]]
    await commit.close()


async def test_a_full_batch_does_not_wait_the_window():
    flush = Flusher(0.05)
    commit = GroupCommit(flush, window=5.0, max_batch=2, name="test-full")
    first = asyncio.create_task(commit.submit("a"))
    await flush.started.wait()
    rest = [asyncio.create_task(commit.submit(x)) for x in "bc"]
    started = time.monotonic()
    await asyncio.gather(first, *rest)
    assert time.monotonic() - started < 2.5
    assert flush.batches == [["a"], ["b", "c"]]
    await commit.close()
