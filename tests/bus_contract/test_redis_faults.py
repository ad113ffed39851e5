"""The Redis bus through Redis going away: a private ``redis-server`` on a free port is
shut down (``SHUTDOWN NOSAVE``: every stream, group and key gone) and started again on
the same port while traffic flows. The bus reconnects with back-off, logs once per
outage, and delivery resumes; nothing hangs."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kefu.core.bus import WorkItem
from kefu.core.errors import StartupError
from kefu.plugins.bus_redis.bus import RedisBus
from tests.bus_contract.conftest import RedisServer, eventually, free_port


async def _node(server: RedisServer) -> RedisBus:
    bus = RedisBus(server.url, prefix="fault:", block_ms=200, connect_timeout=5)
    await bus.open()
    return bus


async def test_delivery_resumes_after_a_redis_restart(private_redis, caplog):
    caplog.set_level(logging.WARNING, logger="kefu.plugins.bus_redis")
    a, b = await _node(private_redis), await _node(private_redis)
    got: list[int] = []
    b.subscribe("live", lambda topic, payload: got.append(int(payload)))
    done: list[WorkItem] = []

    async def work(item: WorkItem) -> None:
        done.append(item)
        await b.ack(item.queue, "g", [item.id])

    b.consume("jobs", "g", work, claim_idle=1)
    sent, running = 0, True

    async def publisher() -> None:  # about 500 payloads a second, through the outage
        nonlocal sent
        while running:
            a.publish("live", b"%d" % sent)
            sent += 1
            await asyncio.sleep(0.002)

    task = asyncio.create_task(publisher())
    try:
        await eventually(lambda: len(got) > 100, what="traffic before the restart")
        await a.enqueue("jobs", b"before")
        await eventually(lambda: len(done) == 1)

        await asyncio.to_thread(private_redis.shutdown)
        first_after_shutdown = sent
        outage_started = time.monotonic()
        # while Redis is down: shared state fails fast instead of hanging
        with pytest.raises((RedisConnectionError, RedisTimeoutError, OSError)):
            await asyncio.wait_for(a.state.get("k"), 5)
        await asyncio.sleep(1.0)
        published_in_outage = sent - first_after_shutdown
        await asyncio.to_thread(private_redis.start)
        outage = time.monotonic() - outage_started

        target = sent + 200
        await eventually(lambda: got and got[-1] >= target, within=20, what="delivery again")
        # the stream, the group and the keys were gone: all made again as used
        await a.enqueue("jobs", b"after")
        await eventually(lambda: len(done) == 2, within=10, what="the work queue again")
        assert await a.state.set("k", b"v", ttl=5) and await b.state.get("k") == b"v"
    finally:
        running = False
        await task
    assert got == sorted(set(got)), "no payload twice, publisher order kept"
    # what was published while Redis was down was held and sent after the restart
    held = set(range(first_after_shutdown, target))
    missing = held - set(got)
    assert not missing, f"{len(missing)} of the publishes made during the outage were lost"
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert 1 <= len(warnings) <= 4, "logged once per outage and bus, not per retry"
    print(
        f"\noutage {outage:.2f} s; {published_in_outage} publishes during it, all delivered; "
        f"{len(got)} of {sent} delivered in all; {len(warnings)} outage warnings"
    )
    for bus in (a, b):
        await asyncio.wait_for(bus.close(), 10)


async def test_close_during_an_outage_does_not_hang(private_redis):
    a = await _node(private_redis)
    inbox: list[bytes] = []
    a.subscribe("t", lambda topic, payload: inbox.append(payload))
    a.consume("q", "g", lambda item: asyncio.sleep(0))
    await asyncio.to_thread(private_redis.shutdown)
    a.publish("t", b"lost")
    started = time.monotonic()
    await asyncio.wait_for(a.close(), 10)
    assert time.monotonic() - started < 8


async def test_open_fails_clearly_without_redis():
    bus = RedisBus(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.3)
    with pytest.raises(StartupError, match="redis bus: cannot reach"):
        await bus.open()
    await bus.close()


async def test_a_node_started_while_redis_is_down_catches_up(private_redis):
    """A reader keeps its position through the outage: what others published after it
    came back is delivered (stream ids are Redis's clock, so they follow the old ones)."""
    a, b = await _node(private_redis), await _node(private_redis)
    inbox: list[bytes] = []
    b.subscribe("t", lambda topic, payload: inbox.append(payload))
    a.publish("t", b"1")
    await eventually(lambda: inbox == [b"1"])
    await asyncio.to_thread(private_redis.shutdown)
    await asyncio.sleep(0.3)
    await asyncio.to_thread(private_redis.start)
    for n in range(2, 6):
        a.publish("t", b"%d" % n)
    await eventually(lambda: len(inbox) == 5, within=15)
    assert inbox == [b"1", b"2", b"3", b"4", b"5"]
    for bus in (a, b):
        await asyncio.wait_for(bus.close(), 10)
