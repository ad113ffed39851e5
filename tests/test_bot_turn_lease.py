"""The bot's per-conversation turn is one at a time across workers (issue 12): a lease in
the bus's shared state, not only a lock of one process."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from kefu.plugins.bot_intents.service import BotService
from kefu.plugins.bus_memory import MemoryBus


def worker_service(bus: MemoryBus) -> BotService:
    """The real turn_lease of two services that share nothing but the bus."""
    service = object.__new__(BotService)
    service.kernel = SimpleNamespace(bus=bus)
    service._locks = {}
    return service


async def test_two_workers_never_run_a_turn_of_one_conversation_at_once():
    bus = MemoryBus()
    await bus.open()
    one, two = worker_service(bus), worker_service(bus)
    inside, order = 0, []

    async def turn(service: BotService, name: str, conversation_id: str) -> None:
        nonlocal inside
        async with service.turn_lease(conversation_id):
            inside += 1
            order.append((name, inside))
            await asyncio.sleep(0.05)
            inside -= 1

    await asyncio.gather(turn(one, "one", "c1"), turn(two, "two", "c1"), turn(one, "one-b", "c1"))
    assert sorted(name for name, _ in order) == ["one", "one-b", "two"]
    assert all(count == 1 for _, count in order)  # never two inside at once
    # other conversations do not wait
    started = asyncio.get_running_loop().time()
    await asyncio.gather(turn(one, "x", "c2"), turn(two, "y", "c3"))
    assert asyncio.get_running_loop().time() - started < 0.09
    assert await bus.state.get("kefu:bot:turn:c1") is None  # released
    await bus.close()
