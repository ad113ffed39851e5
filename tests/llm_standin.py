"""A stand-in for an OpenAI-compatible chat server, for tests and measurements.

No model server exists on this machine, so ``kefu.plugins.llm_openai`` is tested against
this: an aiohttp app on 127.0.0.1 (a free port) serving ``POST /v1/chat/completions``
as the OpenAI API does: a Bearer key, a JSON body, and with ``stream: true`` server-sent
events (``data: {chunk}`` lines, a ``usage`` chunk when ``stream_options.include_usage``
is set, ``data: [DONE]``); without it one JSON completion. It is a mock, not a model:
what it answers is scripted by :attr:`StandIn.mode`:

- ``answer``: the first sentence of passage [1] of the system prompt, with ``[1]``
- ``refuse``: ``NO_ANSWER`` (streamed in two pieces, as a tokenizer would cut it)
- ``uncited``: an answer that cites nothing
- ``hang``: one piece, then nothing until the client gives up
- ``error``: HTTP 500 with an OpenAI-style error body
- ``stream_error``: an ``error`` event in the middle of the stream
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

KEY = "sk-standin-test"


@dataclass
class StandIn:
    mode: str = "answer"
    #: seconds between two pieces of the stream
    delay: float = 0.02
    #: characters per piece (about two tokens)
    piece: int = 8
    #: False: one JSON completion even when a stream is asked for (some servers do)
    streams: bool = True
    #: the Bearer key it accepts
    key: str = KEY
    #: ``usage.total_tokens`` reported; None: a rough count of the prompt and answer
    usage: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> StandIn:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.completions)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # the free port the OS chose
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def stop(self) -> None:
        self.released.set()  # a hanging answer ends
        if self.runner is not None:
            await self.runner.cleanup()

    def answer_text(self, body: dict[str, Any]) -> str:
        system = body["messages"][0]["content"]
        if self.mode == "refuse":
            return "NO_ANSWER"
        if self.mode == "uncited":
            return "You can probably do that, just ask in the shop."
        passage = system.split("\n[1] ", 1)[1].split("\n", 1)[1]
        sentence = re.split(r"(?<=[.!?。！？])\s*", passage.strip())[0]  # noqa: RUF001
        if "answer in Chinese" in system:
            return f"根据帮助文章：{sentence}[1]"  # noqa: RUF001
        return f"According to our help pages: {sentence} [1]"

    async def completions(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response(
                {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                           "code": "invalid_api_key"}}, status=401)  # fmt: skip
        body = await request.json()
        self.requests.append(body)
        if self.mode == "error":
            return web.json_response(
                {"error": {"message": "The server had an error", "type": "server_error"}},
                status=500,
            )
        text = self.answer_text(body)
        tokens = self.usage or (len(str(body["messages"])) + len(text)) // 4
        created, model = int(time.time()), body.get("model", "standin")
        if not body.get("stream") or not self.streams:
            return web.json_response({
                "id": "chatcmpl-standin", "object": "chat.completion", "created": created,
                "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens},
            })  # fmt: skip
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})  # fmt: skip
        await resp.prepare(request)
        try:
            await self.stream(resp, body, text, tokens)
        except ConnectionResetError:
            pass  # the client gave up (its timeout), as it may with a real server
        return resp

    async def stream(self, resp: web.StreamResponse, body: dict, text: str, tokens: int) -> None:
        created, model = int(time.time()), body.get("model", "standin")

        async def event(payload: Any) -> None:
            data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
            await resp.write(b"data: " + data + b"\n\n")

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {"id": "chatcmpl-standin", "object": "chat.completion.chunk",
                    "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip

        await resp.write(b": keep-alive\n\n")
        await event(chunk({"role": "assistant", "content": ""}))
        pieces = (
            ["NO_", "ANSWER"]
            if self.mode == "refuse"
            else [text[i : i + self.piece] for i in range(0, len(text), self.piece)]
        )
        for n, piece in enumerate(pieces):
            await event(chunk({"content": piece}))
            if self.mode == "hang":
                await self.released.wait()
                return
            if self.mode == "stream_error" and n == 1:
                await event({"error": {"message": "model overloaded", "type": "server_error"}})
                return
            await asyncio.sleep(self.delay)
        await event(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            await event({"id": "chatcmpl-standin", "object": "chat.completion.chunk",
                         "created": created, "model": model, "choices": [],
                         "usage": {"prompt_tokens": tokens, "completion_tokens": 0,
                                   "total_tokens": tokens}})  # fmt: skip
        await event(b"[DONE]")
