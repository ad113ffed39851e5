"""The client of one kernel: an OpenAI-compatible ``POST {base_url}/chat/completions``,
streamed (server-sent events, ``data: {...}`` lines ending with ``data: [DONE]``).

Bounds, all from ``[llm_openai]``: the connect, idle and total timeouts; ``max_tokens``
per answer; ``max_concurrent`` answers at once in this process (one more is not queued:
the bot answers with the best passage instead); a token budget per site and window,
counted in the bus's shared state so that every process of an install draws on one
budget. Each answer reserves its estimated cost before it is asked for and settles the
reservation with what the server reports (``usage``) afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import orjson

from kefu.core import __version__
from kefu.core.bus import LocalState
from kefu.core.types import GeneratedAnswer, KnowledgeAnswer
from kefu.plugins.llm_openai.prompt import estimate_tokens, judge, may_be_refusal, messages
from kefu.plugins.llm_openai.site_settings import SiteSettings, enabled_for, merged

log = logging.getLogger(__name__)

WINDOWS = {"hour": 3600, "day": 86400}


class ProviderError(Exception):
    """The server answered with an error (status, or an ``error`` event in the stream)."""


class Budget:
    """Tokens spent per site in fixed windows (``kefu:llm:tokens:<site>:<window>``)."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._local = LocalState()

    @property
    def state(self) -> Any:
        bus = self.kernel.bus
        return bus.state if bus is not None else self._local

    @staticmethod
    def key(site_id: str, window: str) -> tuple[str, int]:
        seconds = WINDOWS[window]
        return f"kefu:llm:tokens:{site_id}:{int(time.time() // seconds)}", seconds

    async def reserve(self, site_id: str, window: str, limit: int, tokens: int) -> str | None:
        """Take ``tokens`` from the site's budget: the window's key, or None when over."""
        key, seconds = self.key(site_id, window)
        total = await self.state.incr(key, tokens, ttl=seconds + 60)
        if total > limit:
            await self.state.incr(key, -tokens)
            return None
        return key

    async def settle(self, key: str, reserved: int, spent: int) -> None:
        if spent != reserved:
            await self.state.incr(key, spent - reserved)

    async def spent(self, site_id: str, window: str) -> int:
        value = await self.state.get(self.key(site_id, window)[0])
        return int(value) if value else 0


class Provider:
    """Answers composed by the model, bounded in time, concurrency and tokens."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.http: aiohttp.ClientSession | None = None
        self.budget = Budget(kernel)
        self.sites = SiteSettings(kernel)
        self.active = 0
        self.enabled = True  # False while shed under pressure (kefu_degradation_features)
        self.counts = {
            "answers": 0,
            "refusals": 0,
            "busy": 0,
            "over_budget": 0,
            "timeouts": 0,
            "failures": 0,
            "tokens": 0,
        }
        #: seconds from the request to the first visible text, of the last 100 answers
        self.first_text_s: list[float] = []

    @property
    def settings(self) -> Any:
        return self.kernel.config.section("llm_openai")

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(headers={"User-Agent": f"kefu/{__version__}"})

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None

    async def generate(
        self,
        site_id: str,
        question: str,
        passages: Sequence[KnowledgeAnswer],
        lang: str,
        on_text: Callable[[str], Awaitable[None]],
    ) -> GeneratedAnswer | None:
        s = self.settings
        if not passages or self.http is None or not self.enabled:
            return None
        overrides = await self.sites.overrides(site_id)  # Admin > Generative answers
        if not enabled_for(s, site_id, overrides):
            return None
        s = merged(s, site_id, overrides)
        if self.active >= s.max_concurrent:
            self.counts["busy"] += 1
            return None
        self.active += 1  # before the first await: the check above holds for this one
        try:
            return await self._answer(s, site_id, question, list(passages), lang, on_text)
        finally:
            self.active -= 1

    async def _answer(
        self,
        s: Any,
        site_id: str,
        question: str,
        passages: list[KnowledgeAnswer],
        lang: str,
        on_text: Callable[[str], Awaitable[None]],
    ) -> GeneratedAnswer | None:
        passages = passages[: s.max_passages]
        chat = messages(question, passages, lang, s.max_passage_chars)
        prompt_tokens = estimate_tokens(chat)
        reserved = prompt_tokens + s.max_tokens
        key = await self.budget.reserve(site_id, s.budget_window, s.budget_tokens, reserved)
        if key is None:
            self.counts["over_budget"] += 1
            log.info("llm_openai: site %s is over its %s token budget", site_id, s.budget_window)
            return None
        streamed = [""]
        spent = reserved
        try:
            async with asyncio.timeout(s.timeout_s):
                text, usage = await self._complete(s, chat, streamed, on_text)
            spent = usage or prompt_tokens + estimate_tokens(text)
        except TimeoutError:
            self.counts["timeouts"] += 1
            spent = prompt_tokens + estimate_tokens(streamed[0])
            log.warning("llm_openai: no complete answer within %s s", s.timeout_s)
            return None
        except (aiohttp.ClientError, OSError, ProviderError, ValueError) as exc:
            self.counts["failures"] += 1
            spent = prompt_tokens + estimate_tokens(streamed[0])
            log.warning("llm_openai: %s: %s", type(exc).__name__, exc)
            return None
        finally:
            self.counts["tokens"] += spent
            await self.budget.settle(key, reserved, spent)
        answer = judge(text, len(passages), spent)
        self.counts["refusals" if answer.refused else "answers"] += 1
        return answer

    async def _complete(
        self,
        s: Any,
        chat: list[dict[str, str]],
        streamed: list[str],
        on_text: Callable[[str], Awaitable[None]],
    ) -> tuple[str, int]:
        """The whole answer's text and the tokens the server says it cost (0: not said)."""
        assert self.http is not None
        body: dict[str, Any] = {
            "model": s.model,
            "messages": chat,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "stream": True,
        }
        if s.stream_usage:
            body["stream_options"] = {"include_usage": True}
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=s.connect_timeout_s, sock_read=s.idle_timeout_s
        )
        started = time.monotonic()
        url = s.base_url.rstrip("/") + "/chat/completions"
        async with self.http.post(
            url, data=orjson.dumps(body), headers=headers, timeout=timeout
        ) as resp:
            if resp.status != 200:
                detail = (await resp.text())[:200].replace("\n", " ")
                raise ProviderError(f"HTTP {resp.status} from {url}: {detail}")
            if not resp.content_type.startswith("text/event-stream"):
                return self._whole(await resp.read())  # a server that does not stream
            usage, first = 0, None
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue  # blank separators, ": keep-alive" comments, event names
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = orjson.loads(data)
                if chunk.get("error"):
                    raise ProviderError(str(chunk["error"])[:200])
                usage = (chunk.get("usage") or {}).get("total_tokens") or usage
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if not piece:
                        continue
                    text = streamed[0] = streamed[0] + piece
                    if may_be_refusal(text):
                        continue
                    if first is None:
                        first = time.monotonic() - started
                        self.first_text_s = [*self.first_text_s[-99:], first]
                    await on_text(text.strip())
            return streamed[0], int(usage)

    @staticmethod
    def _whole(payload: bytes) -> tuple[str, int]:
        data = orjson.loads(payload)
        if data.get("error"):
            raise ProviderError(str(data["error"])[:200])
        choices = data.get("choices") or [{}]
        text = (choices[0].get("message") or {}).get("content") or ""
        return text, int((data.get("usage") or {}).get("total_tokens") or 0)

    def stats(self) -> dict[str, Any]:
        return {f"llm_{name}_total": value for name, value in self.counts.items()} | {
            "llm_active": self.active
        }
