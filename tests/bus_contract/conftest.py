"""Fixtures for the bus contract suite: one ``backend`` per bus, real services.

Every test that takes ``backend`` runs against the in-process memory bus, the Redis
bus on the local Redis (``KEFU_TEST_REDIS``, default 127.0.0.1:6379, a unique key
prefix per test) and the Redis bus on a three-node Redis Cluster started here from
Debian's ``redis-server``. ``private_redis`` is a ``redis-server`` of the test's own
on a free port, for fault injection (shut down and started again on the same port).
A missing service skips locally and fails in CI. To run the suite against a new bus,
add a maker to ``MAKERS`` (see docs/bus.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kefu.core.bus import Bus
from tests.conftest import service_unavailable

REDIS_URL = os.environ.get("KEFU_TEST_REDIS", "redis://127.0.0.1:6379/0")


@dataclass
class Backend:
    """A bus and a way to open more nodes on it."""

    kind: str
    #: a new node on the same bus, opened (closed after the test). On the memory bus
    #: every call gives the one in-process bus back: two "nodes" are one.
    node: Callable[..., Awaitable[Bus]]
    #: two node() calls are two processes with their own node_id
    distinct_nodes: bool
    opened: list[Bus] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


async def eventually(check: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    """Wait until ``check()`` holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.005)


class RedisServer:
    """A ``redis-server`` of the test's own: nothing saved, stopped at teardown."""

    def __init__(self, directory: Path, port: int | None = None, *extra: str) -> None:
        self.directory, self.port, self.extra = directory, port or free_port(), extra
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            service_unavailable("redis-server (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--dir", str(self.directory), *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                service_unavailable(f"redis-server on port {self.port} (did not start)")
            time.sleep(0.02)

    def shutdown(self) -> None:
        """``SHUTDOWN NOSAVE``: every key is gone, every connection dropped."""
        if self.proc is None:
            return
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
            capture_output=True,
            timeout=10,
        )
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def private_redis(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory) -> Iterator[str]:
    """A three-master Redis Cluster on free ports, from Debian's redis-server."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        service_unavailable("redis-server and redis-cli (apt-get install redis-server)")
    root = tmp_path_factory.mktemp("redis-cluster")
    servers = []
    try:
        for n in range(3):
            server = RedisServer(
                root / str(n),
                None,
                "--cluster-enabled", "yes",
                "--cluster-port", str(free_port()),  # not port + 10000: may be taken
                "--cluster-config-file", str(root / f"nodes-{n}.conf"),
                "--cluster-node-timeout", "2000",
            )  # fmt: skip
            server.start()
            servers.append(server)
        addresses = [f"127.0.0.1:{s.port}" for s in servers]
        created = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            service_unavailable(f"a local Redis Cluster ({created.stdout[-300:]})")
        deadline = time.monotonic() + 20
        while True:
            info = subprocess.run(
                ["redis-cli", "-p", str(servers[0].port), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            if "cluster_state:ok" in info:
                break
            if time.monotonic() > deadline:
                service_unavailable("a local Redis Cluster (cluster_state never ok)")
            time.sleep(0.1)
        yield f"redis+cluster://127.0.0.1:{servers[0].port}"
    finally:
        for server in servers:
            server.stop()


async def _memory(request) -> AsyncIterator[Backend]:
    from kefu.plugins.bus_memory import MemoryBus

    bus = MemoryBus()
    await bus.open()

    async def node(**_options) -> Bus:
        return bus

    backend = Backend("memory", node, distinct_nodes=False, opened=[bus])
    yield backend


async def _redis_on(url: str, request) -> AsyncIterator[Backend]:
    try:
        from kefu.plugins.bus_redis.bus import RedisBus
    except ImportError as exc:  # the plugin is not there yet
        service_unavailable(f"the Redis bus plugin ({exc})")
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster

    prefix = f"kefu-test:{secrets.token_hex(4)}:"
    cluster = url.startswith("redis+cluster://")
    plain = url.replace("redis+cluster://", "redis://", 1)
    admin = RedisCluster.from_url(plain) if cluster else aioredis.Redis.from_url(plain)
    try:
        await admin.ping()
    except Exception as exc:
        await admin.aclose()
        service_unavailable(f"Redis at {url} ({exc})")
    backend = Backend("redis", None, distinct_nodes=True)  # type: ignore[arg-type]

    async def node(**options) -> Bus:
        options.setdefault("block_ms", 200)
        bus = RedisBus(url, prefix=prefix, connect_timeout=5, **options)
        await bus.open()
        backend.opened.append(bus)
        return bus

    backend.node = node
    try:
        yield backend
    finally:
        for bus in backend.opened:
            await asyncio.wait_for(bus.close(), 15)  # close never hangs
        with contextlib.suppress(Exception):
            if cluster:
                for key in [k async for k in admin.scan_iter(match=f"{prefix}*", count=1000)]:
                    await admin.delete(key)
            else:
                keys = [k async for k in admin.scan_iter(match=f"{prefix}*", count=1000)]
                if keys:
                    await admin.delete(*keys)
        await admin.aclose()


async def _redis(request) -> AsyncIterator[Backend]:
    async for backend in _redis_on(REDIS_URL, request):
        yield backend


async def _redis_cluster(request) -> AsyncIterator[Backend]:
    url = request.getfixturevalue("redis_cluster_url")
    async for backend in _redis_on(url, request):
        backend.kind = "redis_cluster"
        yield backend


#: Bus name -> async generator of a :class:`Backend`. Add yours here.
MAKERS = {
    "memory": _memory,
    "redis": _redis,
    "redis_cluster": _redis_cluster,
}


@pytest.fixture(params=list(MAKERS))
async def backend(request) -> AsyncIterator[Backend]:
    async for made in MAKERS[request.param](request):
        try:
            yield made
        finally:
            if made.kind == "memory":
                for bus in made.opened:
                    await bus.close()


@pytest.fixture
async def redis_backend(request) -> AsyncIterator[Backend]:
    """The Redis bus alone (for what only a real network bus can show)."""
    async for made in _redis(request):
        yield made
