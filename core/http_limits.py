"""HTTP connection limits aiohttp does not offer: a deadline for a request's headers.

aiohttp waits for the first request of a new connection without any limit (its
keep-alive timer only runs between requests), so a client sending its headers a
byte at a time, or never finishing them, holds a socket forever (slowloris). The
runner here closes a connection whose first request's headers are not complete
``[server] header_timeout`` seconds after it opened; later requests on a kept-alive
connection are bounded by aiohttp's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


class HeaderDeadlineHandler(RequestHandler):
    """A request handler that drops the connection when the first headers are late."""

    __slots__ = ("_header_deadline", "_header_timeout")

    def __init__(self, manager: Any, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._header_timeout > 0:
            loop = asyncio.get_running_loop()
            self._header_deadline = loop.call_later(self._header_timeout, self._headers_late)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_deadline is not None and self._request_count:
            self._header_deadline.cancel()  # a whole request head arrived
            self._header_deadline = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        super().connection_lost(exc)

    def _headers_late(self) -> None:
        self._header_deadline = None
        if not self._request_count and self.transport is not None:
            self.transport.close()


class HeaderDeadlineServer(web.Server):
    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return HeaderDeadlineHandler(
            self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs
        )


class Runner(web.AppRunner):
    """``web.AppRunner`` whose connections have a header deadline."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the application
        return HeaderDeadlineServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            header_timeout=self.header_timeout,
            **plain._kwargs,
        )
