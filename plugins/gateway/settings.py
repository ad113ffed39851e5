"""The ``[gateway]`` section of kefu.toml: frame limits, outbox, rate limits, replay."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kefu.core.config import Section


class GatewaySettings(Section):
    """Limits every transport applies through the gateway."""

    #: Largest frame processed; a larger one is answered with ``frame_too_large``.
    max_frame_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: Longest message text, in characters.
    max_text_chars: int = Field(8000, ge=1)
    #: Frames a connection may queue for its client before the slow-consumer policy acts.
    outbox_frames: int = Field(1024, ge=16)
    #: Bytes a connection may queue for its client (the same policy as ``outbox_frames``).
    outbox_bytes: int = Field(1024 * 1024, ge=64 * 1024)
    #: Past this share of the outbox, new ephemeral frames (typing, presence, read) are shed.
    shed_ephemeral_at: float = Field(0.5, gt=0, le=1)
    #: Sustained frames per second a client may send, and the burst above it.
    rate: float = Field(20.0, gt=0)
    burst: int = Field(40, ge=1)
    #: Frames refused in a row for the rate limit before the connection is closed.
    flood_close_after: int = Field(200, ge=1)
    #: Seconds between a client's ``ping`` frames, told to it in ``hello`` and every ``pong``
    #: (``heartbeat_s``); ``heartbeat_shed_s`` while ``heartbeat`` is shed under pressure
    #: (degradation level 1, docs/degradation.md): fewer pings from every client.
    heartbeat_s: float = Field(20.0, gt=0, le=3600)
    heartbeat_shed_s: float = Field(60.0, gt=0, le=3600)
    #: Messages replayed by one ``resume``; the reply says ``more`` when there are more.
    replay_max: int = Field(500, ge=1)
    #: Seconds a conversation record read for a send stays cached at most (0: read every
    #: time). Changes drop it at once in every process (an invalidation on the bus); the
    #: ttl only bounds a copy whose change announced nothing.
    conversation_cache_ttl: float = Field(300.0, ge=0, le=3600)
    #: How frames reach other processes: ``broadcast`` (every process gets every frame),
    #: ``addressed`` (only the processes holding a recipient's connection), ``auto``
    #: (addressed unless the bus is the in-process one).
    fanout: Literal["auto", "broadcast", "addressed"] = "auto"
    #: Shards of the connection registry.
    shards: int = Field(16, ge=1, le=1024)
    #: Seconds between re-checks of every agent connection's credential (0: only on
    #: identity changes announced on the bus, which apply within a second).
    recheck_interval_s: float = Field(60.0, ge=0)
