"""HTTP long-polling transport: the gateway's frames for clients that cannot hold a WebSocket.

- ``POST /v1/poll/open`` (token as ``Authorization: Bearer``, ``?token=`` or
  JSON ``{"token"}``) -> ``{session, recv_timeout, idle_timeout}``;
- ``POST /v1/poll/send?session=ID`` with one frame or a JSON array of frames;
  replies and errors arrive through ``recv`` exactly as over a WebSocket;
- ``GET /v1/poll/recv?session=ID&timeout=S`` waits up to ``S`` seconds and
  returns ``{"frames": [...], "recv_timeout": T}`` (possibly empty; ``T`` the longest
  wait of the next one, stretched under pressure);
- ``POST /v1/poll/close?session=ID``.

A session is one gateway connection with the same semantics as a WebSocket
(outbox, rate limit, slow-consumer policy), held by the worker process that
opened it; a request landing on another worker is relayed to it over the bus
(:mod:`.sessions`). A session nobody polls for ``idle_timeout`` seconds
expires. A session the server closed answers 410 with the close reason as the
error code. Sessions are capped per token and per address, across workers.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from kefu.core.config import Section
from kefu.core.types import DegradableFeature, TransportInfo
from kefu.hooks import hookimpl
from kefu.plugins.transport_longpoll.sessions import LongPoll

PATH = "/v1/poll"


class LongPollSettings(Section):
    """The ``[transport_longpoll]`` section."""

    #: Longest wait of one ``recv``, in seconds (clients may ask for less).
    recv_timeout: float = Field(25.0, gt=0, le=120)
    #: The same while ``longpoll_interval`` is shed under pressure (degradation level 1):
    #: fewer empty polls. Every ``recv`` answer carries the one in force (``recv_timeout``).
    recv_timeout_shed: float = Field(50.0, gt=0, le=120)
    #: A session with no request for this long is closed.
    idle_timeout: float = Field(60.0, gt=0)
    #: Frames returned by one ``recv`` at most.
    max_frames_per_recv: int = Field(256, ge=1)
    #: Bytes a session may hold for its client (besides ``[gateway] outbox_frames``);
    #: past it the slow-consumer policy acts.
    outbox_bytes: int = Field(1024 * 1024, ge=64 * 1024)
    #: Open sessions one token (visitor or agent) may hold, over every worker.
    max_sessions_per_principal: int = Field(20, ge=1)
    #: Open sessions one remote address may hold, over every worker.
    max_sessions_per_address: int = Field(200, ge=1)
    #: Seconds without a liveness beat after which a worker is taken for gone: its
    #: sessions answer ``410 session_lost`` on the other workers.
    owner_timeout: float = Field(10.0, ge=1, le=300)


def _poll(kernel) -> LongPoll:
    return kernel.plugin_state("transport_longpoll", LongPoll)


@hookimpl
def kefu_config_schema():
    return {"transport_longpoll": LongPollSettings}


@hookimpl
def kefu_transport_adapters(kernel):
    return [TransportInfo("longpoll", PATH, "HTTP long-polling, JSON frames")]


@hookimpl
def kefu_degradation_features(kernel):
    poll = _poll(kernel)

    def set_enabled(enabled: bool) -> None:
        poll.stretched = not enabled

    return [
        DegradableFeature(
            "longpoll_interval",
            50,
            set_enabled,
            1,
            "a recv waits up to recv_timeout_shed (50 s) instead of 25 s: fewer empty polls",
        )
    ]


@hookimpl
def kefu_routes(kernel):
    poll = _poll(kernel)
    return [
        web.post(f"{PATH}/open", poll.open),
        web.post(f"{PATH}/send", poll.send),
        web.get(f"{PATH}/recv", poll.recv),
        web.post(f"{PATH}/close", poll.close),
    ]


@hookimpl
async def kefu_startup(kernel):
    await _poll(kernel).start()


@hookimpl
async def kefu_shutdown_requested(kernel):
    poll = kernel.existing_plugin_state("transport_longpoll")
    if poll is not None:
        await poll.end_all("shutdown")


@hookimpl
async def kefu_shutdown(kernel):
    poll = kernel.drop_plugin_state("transport_longpoll")
    if poll is not None:
        await poll.stop()
