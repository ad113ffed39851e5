"""The driver's side of the client processes, plus the measuring window and the lag probe."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import time
from array import array
from typing import Any

import aiohttp

from tests.bench.client import Dialer, Participant, Stats
from tests.bench.servers import (
    ServerProcess,
    gc_collections,
    gc_workers,
    loop_lag,
    loop_lag_workers,
    scrape_metrics,
    scrape_workers,
)
from tests.bench.worker import Channel, worker_main

log = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    """A command failed inside a client process (its traceback is the message)."""


class Pool:
    """Client processes (multiprocessing, spawned) answering commands over pipes."""

    def __init__(self, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs: list[Any] = []
        self.channels: list[Channel] = []
        for index in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, index), daemon=True)
            proc.start()
            child.close()
            self.procs.append(proc)
            self.channels.append(Channel(parent))
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._readers = [asyncio.ensure_future(self._read(c)) for c in self.channels]

    def __len__(self) -> int:
        return len(self.procs)

    async def _read(self, channel: Channel) -> None:
        while True:
            ident, ok, result = await channel.recv()
            log.debug("reply %s ok=%s", ident, ok)
            future = self._waiting.pop(ident, None)
            if future is not None and not future.done():
                if ok:
                    future.set_result(result)
                else:
                    future.set_exception(WorkerError(result))

    async def call(self, index: int, command: str, deadline_s: float = 600.0, **args: Any) -> Any:
        ident = next(self._ids)
        future = self._waiting[ident] = asyncio.get_running_loop().create_future()
        self.channels[index].send((ident, command, args))
        log.debug("call %s: %s to worker %s", ident, command, index)
        async with asyncio.timeout(deadline_s):
            return await future

    async def each(
        self, command: str, per_worker: list[dict] | None = None, deadline_s: float = 600.0, **args
    ) -> list[Any]:
        """The same command on every worker (``per_worker`` adds each one's own arguments)."""
        calls = [
            self.call(i, command, deadline_s, **{**args, **(per_worker[i] if per_worker else {})})
            for i in range(len(self))
        ]
        return await asyncio.gather(*calls)

    async def close(self) -> None:
        for channel in self.channels:
            with contextlib.suppress(OSError):
                channel.send((0, "exit", {}))
        for reader in self._readers:
            reader.cancel()
        deadline = time.monotonic() + 10
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()


class Probe:
    """One extra connection that sends ``ping`` every ``interval`` s and times the ``pong``.

    The round trip includes the server's event-loop delay at that moment (and loopback and
    client costs), so it measures lag where the exporter's histogram is absent (the relay).
    """

    def __init__(self, base: str, token: str, interval: float = 0.05) -> None:
        self.interval = interval
        self.dialer = Dialer(base, "ws", ["127.0.0.2"], Stats())
        self.peer = Participant("visitor", "probe", token, "probe", self.dialer)
        self.peer.closing = True  # a probe does not reconnect
        self.samples = array("d")
        self._task: asyncio.Task | None = None

    async def open(self, within_s: float = 30.0) -> None:
        """Connect; a ``503 busy`` (a server with the degradation plugin shedding its own
        start-up) is retried after its ``Retry-After`` (at most 1 s), as clients do."""
        deadline = time.monotonic() + within_s
        while True:
            try:
                await self.peer.connect()
                return
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status != 503 or time.monotonic() > deadline:
                    raise
                after = (exc.headers or {}).get("Retry-After", "1")
                await asyncio.sleep(min(1.0, float(after) if after.isdigit() else 1.0))

    def start(self) -> None:
        self.samples = array("d")
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
                await self.peer.request({"op": "ping"}, wait_s=5.0)
                self.samples.append(time.monotonic() - started)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def stop(self) -> list[float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return sorted(self.samples)

    async def close(self) -> None:
        await self.peer.close()
        await self.dialer.close()


class Window:
    """Server CPU seconds, RSS and loop lag between :meth:`open` and :meth:`close`.

    CPU and RSS are summed over every server process (a supervisor and its workers); with
    several workers the loop lag is each worker's (scraped through a connection that
    reached it) and the worst of them, GC collections their sum.
    """

    def __init__(self, server: ServerProcess, http: aiohttp.ClientSession, probe: Probe) -> None:
        self.server, self.http, self.probe = server, http, probe

    async def _scrape(self) -> Any:
        if self.server.workers > 1:
            return await scrape_workers(self.server.base, self.server.workers)
        return await scrape_metrics(self.http, self.server.base)

    async def open(self) -> None:
        self.metrics = await self._scrape()
        self.cpu = self.server.cpu()
        self.started = time.monotonic()
        self.probe.start()

    async def close(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        cpu = self.server.cpu() - self.cpu
        probe = await self.probe.stop()
        metrics = await self._scrape()
        if self.server.workers > 1:
            lag, gcs = loop_lag_workers(self.metrics, metrics), gc_workers(self.metrics, metrics)
        else:
            lag, gcs = loop_lag(self.metrics, metrics), gc_collections(self.metrics, metrics)
        return {
            "elapsed_s": round(elapsed, 2),
            "cpu_s": round(cpu, 3),
            "cpu_percent": round(100 * cpu / elapsed, 1) if elapsed else None,
            "rss_mib": round(self.server.rss() / 2**20, 1),
            "loop_lag": lag,
            "gc_collections": gcs,
            "load_average": round(os.getloadavg()[0], 2),  # other tenants of the machine
            "probe_samples": probe,
        }
