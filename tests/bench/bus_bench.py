"""Bus throughput: batched publish (one pipeline per loop tick) against one at a time.

    python -m tests.bench.bus_bench [--count 20000] [--url redis://127.0.0.1:6379/0]

Two bus instances (two "nodes") on the same Redis: one publishes, the other
subscribes; a rate is payloads per second until the subscriber had them all
(end to end), and until the publisher's flush returned (publish side). The memory
bus is measured the same way for reference. Figures are in docs/bus.md.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time

from kefu.plugins.bus_memory import MemoryBus
from kefu.plugins.bus_redis.bus import RedisBus

PAYLOAD = b"x" * 200  # about a gateway envelope


async def _wait(check, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the subscriber did not get everything")
        await asyncio.sleep(0.001)


async def _publish_run(
    publisher, subscriber, count: int, burst: int | None
) -> tuple[float, float, float]:
    """``burst`` payloads per loop tick (None: one, and wait for it, at a time).
    Returns the publish-side and end-to-end rates and the CPU time per payload (µs) of
    this process, which publishes and receives: a figure a busy machine changes less."""
    got = 0

    def on(topic: str, payload: bytes) -> None:
        nonlocal got
        got += 1

    topic = f"bench-{secrets.token_hex(3)}"
    stop = subscriber.subscribe(topic, on)
    await asyncio.sleep(0.1)
    started, cpu = time.perf_counter(), time.process_time()
    if burst is None:
        for _ in range(count):
            publisher.publish(topic, PAYLOAD)
            await publisher.flush()  # one round trip per publish
    else:
        for start in range(0, count, burst):
            for _ in range(min(burst, count - start)):
                publisher.publish(topic, PAYLOAD)
            await asyncio.sleep(0)  # the end of a loop tick: the batch goes
    await publisher.flush()
    sent = time.perf_counter() - started
    await _wait(lambda: got >= count)
    delivered = time.perf_counter() - started
    cpu = time.process_time() - cpu
    stop()
    return count / sent, count / delivered, cpu / count * 1e6


async def _queue_run(bus, count: int) -> tuple[float, float]:
    queue = f"bench-q-{secrets.token_hex(3)}"
    done = 0

    async def work(item) -> None:
        nonlocal done
        done += 1
        await bus.ack(item.queue, "g", [item.id])

    started = time.perf_counter()
    for start in range(0, count, 100):
        await asyncio.gather(*(bus.enqueue(queue, PAYLOAD) for _ in range(min(100, count - start))))
    enqueued = time.perf_counter() - started
    consume_started = time.perf_counter()
    stop = bus.consume(queue, "g", work)
    await _wait(lambda: done >= count)
    consumed = time.perf_counter() - consume_started
    stop()
    return count / enqueued, count / consumed


async def main(count: int, url: str) -> None:
    rows = []
    memory = MemoryBus()
    await memory.open()
    rows.append(
        ("memory", "batched, 100 per tick", *await _publish_run(memory, memory, count, 100))
    )
    await memory.close()

    prefix = f"kefu-bench-bus-{secrets.token_hex(3)}:"
    a = RedisBus(url, prefix=prefix, maxlen=max(count, 10_000))
    b = RedisBus(url, prefix=prefix, maxlen=max(count, 10_000))
    await a.open()
    await b.open()
    try:
        for burst in (1, 10, 100, 1000):
            label = f"batched, {burst} per tick"
            rows.append(("redis", label, *await _publish_run(a, b, count, burst)))
        single = min(count, 5000)
        rows.append(
            ("redis", "one at a time (flush each)", *await _publish_run(a, b, single, None))
        )
        enq, cons = await _queue_run(b, count)
    finally:
        await a.close()
        await b.close()
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()

    print(f"{count} payloads of {len(PAYLOAD)} bytes\n")
    print("| bus | publishing | publish side /s | end to end /s | CPU µs per payload |")
    print("|---|---|---:|---:|---:|")
    for bus, how, sent, delivered, cpu in rows:
        print(f"| {bus} | {how} | {sent:,.0f} | {delivered:,.0f} | {cpu:.1f} |")
    print(f"\nwork queue (redis): enqueue 100 at a time {enq:,.0f}/s; consume + ack {cons:,.0f}/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.count, args.url))
