"""The Redis Streams bus (``[bus] backend = "redis"``): several processes and machines.

Settings in ``[bus_redis]`` (docs/bus.md). redis-py's asyncio client is a kefu
dependency; hiredis parses replies when installed. ``redis+cluster://`` URLs (or
``cluster = true``) use redis-py's Redis Cluster client.
"""

from __future__ import annotations

from pydantic import Field

from kefu.core.config import Section
from kefu.hooks import hookimpl


class RedisBusSettings(Section):
    """``[bus_redis]``: read at start-up only."""

    #: ``redis://[:password@]host:port/db``, ``rediss://`` for TLS, ``redis+cluster://host:port``
    url: str = "redis://127.0.0.1:6379/0"
    #: Use the Redis Cluster client (also chosen by a ``redis+cluster://`` URL).
    cluster: bool = False
    #: Prefix of every key kefu writes, so installs can share one Redis.
    prefix: str = Field("kefu:", pattern=r"^[^{}\s]{0,64}$")
    #: Entries kept per topic stream (``XADD MAXLEN ~``): how far a resume reaches back.
    maxlen: int = Field(10_000, ge=100, le=10_000_000)
    #: Entries kept per work-queue stream, acknowledged or not.
    queue_maxlen: int = Field(100_000, ge=100, le=100_000_000)
    #: How long one blocking read waits (ms) before it is issued again.
    block_ms: int = Field(2000, ge=10, le=60_000)
    #: Entries asked for per read (``COUNT``).
    count: int = Field(256, ge=1, le=10_000)
    #: Seconds before an unacknowledged work-queue entry is claimed by another consumer,
    #: for consumers that do not choose.
    claim_idle: float = Field(30.0, gt=0, le=86_400)
    #: Payloads kept while Redis is unreachable; past it the oldest are dropped.
    max_buffer: int = Field(100_000, ge=100, le=10_000_000)
    #: Seconds start-up waits for Redis before it fails.
    connect_timeout: float = Field(10.0, ge=0, le=600)


def make_bus(kernel):
    from .bus import RedisBus

    settings: RedisBusSettings = kernel.config.section("bus_redis")
    return RedisBus(
        settings.url,
        prefix=settings.prefix,
        cluster=settings.cluster,
        maxlen=settings.maxlen,
        queue_maxlen=settings.queue_maxlen,
        block_ms=settings.block_ms,
        count=settings.count,
        claim_idle=settings.claim_idle,
        max_buffer=settings.max_buffer,
        connect_timeout=settings.connect_timeout,
    )


@hookimpl
def kefu_config_schema():
    return {"bus_redis": RedisBusSettings}


@hookimpl
def kefu_bus_backends():
    return {"redis": make_bus}
