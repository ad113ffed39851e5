"""The client side of the overload scenario (:mod:`tests.bench.overload`): a connection flood.

:class:`FloodCommands` is mixed into the load-client process (:class:`tests.bench.worker.Worker`):
``flood`` opens one WebSocket per visitor token on a schedule (``n`` connections spread
evenly over ``spread_s`` seconds, at most ``in_flight`` handshakes at once), each once and
never again: a refused handshake (``503 busy`` under the degradation plugin, level 3) is
counted, not retried, and a flooding connection the server closes does not reconnect.
``flood_close`` closes them. The chat population of the same process keeps sending
meanwhile (its ``load`` command runs beside), so its latencies show what the flood
cost the people already talking.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from tests.bench.client import Participant

#: Handshakes in flight per client process during a flood.
FLOOD_IN_FLIGHT = 256


class FloodCommands:
    """Worker commands of the connection flood (needs the Worker's ``_dialer``)."""

    flooders: list[Participant]

    async def cmd_flood(
        self, base: str, tokens: list[tuple[str, str]], spread_s: float, in_flight: int = 0
    ) -> dict[str, Any]:
        dialer = self._dialer(base, "ws", 1.0)  # type: ignore[attr-defined]
        gate = asyncio.Semaphore(in_flight or FLOOD_IN_FLIGHT)
        if not hasattr(self, "flooders"):
            self.flooders = []
        outcome = {"opened": 0, "refused": 0, "failed": 0}
        failures: dict[str, int] = {}
        times: list[float] = []

        async def one(ident: str, token: str) -> None:
            peer = Participant("visitor", ident, token, f"flood.{ident}", dialer)
            peer.closing = True  # a flooding connection is not re-opened when closed
            async with gate:
                started = time.monotonic()
                try:
                    await peer.connect()
                except aiohttp.WSServerHandshakeError as exc:
                    key = "refused" if exc.status == 503 else "failed"
                    outcome[key] += 1
                    failures[f"http_{exc.status}"] = failures.get(f"http_{exc.status}", 0) + 1
                    return
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    outcome["failed"] += 1
                    failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                    return
                times.append(time.monotonic() - started)
                outcome["opened"] += 1
                self.flooders.append(peer)

        first = time.time()
        start = time.monotonic()
        step = spread_s / max(1, len(tokens))
        tasks = []
        for k, (ident, token) in enumerate(tokens):
            delay = start + k * step - time.monotonic()
            if delay > 0.001:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(ident, token)))
        await asyncio.gather(*tasks)
        return {
            **outcome,
            "failures": failures,
            "first": first,
            "last": time.time(),
            "connect_s": times,
        }

    async def cmd_flood_close(self) -> dict[str, Any]:
        flooders, self.flooders = getattr(self, "flooders", []), []
        held = sum(1 for p in flooders if p.link is not None)
        for start in range(0, len(flooders), 256):
            await asyncio.gather(*(p.close() for p in flooders[start : start + 256]))
        return {"held_at_end": held, "closed": len(flooders)}
