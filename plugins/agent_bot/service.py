"""External bots of one kernel (docs/integrations.md, "Agent-bot API").

A site's admin registers a bot service (``POST /v1/agent_bots``: a name and a webhook URL);
it gets an API token and a signing secret. While a site has an active bot, its new
conversations start with it (``kefu_bot_takes``; ``meta["agent_bot"]`` names the bot) and
every visitor message of a conversation it holds is POSTed to the bot's URL, signed like a
webhook (:mod:`kefu.core.signing`). The bot answers through the REST API with its token
(``POST /v1/agent_bot/conversations/{id}/messages``, the one store-and-deliver path) and
hands the conversation to the human agents (``.../handoff``: the ``bot`` state becomes
``queued``, ``bot.handoff`` and ``conversation.queued`` are emitted, routing takes it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from typing import Any

import aiohttp
import orjson

from kefu.core import __version__, signing
from kefu.core.domain import BOT, QUEUED, Message
from kefu.core.errors import ApiError
from kefu.core.storage import INSTALL
from kefu.core.types import Principal

log = logging.getLogger(__name__)

BOT_KIND = "agent_bot.bot"  # site-scoped: the bot's settings
TOKEN_KIND = "agent_bot.token"  # install-level: token id -> (site, bot)
META = "agent_bot"
ATTEMPTS = 3


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AgentBots:
    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.active: dict[str, dict] = {}  # site -> its bot (with "id"), refreshed
        self.refreshed = 0.0
        self.tasks: set[asyncio.Task] = set()
        self.http: aiohttp.ClientSession | None = None
        self.counts = {"posted": 0, "failed": 0}

    @property
    def storage(self) -> Any:
        return self.kernel.storage

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(
            headers={"User-Agent": f"kefu-agent-bot/{__version__}"},
            timeout=aiohttp.ClientTimeout(total=10),
        )

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.close()

    # -- registry -----------------------------------------------------------------------
    async def register(self, site_id: str, name: str, url: str) -> dict:
        bot_id = "bot_" + secrets.token_hex(6)
        token_id, token_secret = secrets.token_hex(8), secrets.token_urlsafe(24)
        data = {
            "name": name, "url": url, "active": True, "created_at": time.time(),
            "secret": "whsec_" + secrets.token_urlsafe(32), "token_id": token_id,
        }  # fmt: skip
        await self.storage.put_record(site_id, BOT_KIND, bot_id, data, expect_version=0)
        await self.storage.put_record(
            INSTALL, TOKEN_KIND, token_id,
            {"site_id": site_id, "bot_id": bot_id, "hash": token_hash(token_secret)},
        )  # fmt: skip
        self.refreshed = 0.0
        return {**data, "id": bot_id, "token": f"kb_{token_id}.{token_secret}"}

    async def bots(self, site_id: str) -> list[Any]:
        return await self.storage.list_records(site_id, BOT_KIND, limit=100)

    async def remove(self, site_id: str, bot_id: str) -> bool:
        record = await self.storage.get_record(site_id, BOT_KIND, bot_id)
        if record is None:
            return False
        await self.storage.delete_record(INSTALL, TOKEN_KIND, record.data["token_id"])
        await self.storage.delete_record(site_id, BOT_KIND, bot_id)
        self.refreshed = 0.0
        return True

    async def bot_of_site(self, site_id: str) -> dict | None:
        """The site's active bot (the oldest, when several), cached for a few seconds."""
        if time.monotonic() - self.refreshed > 5.0:
            self.active = {}
            self.refreshed = time.monotonic()
        if site_id not in self.active:
            records = [r for r in await self.bots(site_id) if r.data.get("active", True)]
            records.sort(key=lambda r: r.data["created_at"])
            self.active[site_id] = {**records[0].data, "id": records[0].id} if records else {}
        return self.active[site_id] or None

    async def authenticate(self, token: str | None) -> Principal | None:
        if not token or not token.startswith("kb_") or "." not in token:
            return None
        token_id, _, secret = token[3:].partition(".")
        record = await self.storage.get_record(INSTALL, TOKEN_KIND, token_id)
        if record is None or not hmac.compare_digest(record.data["hash"], token_hash(secret)):
            return None
        return Principal("bot", record.data["bot_id"], record.data["site_id"], frozenset({"bot"}))

    # -- to the bot ---------------------------------------------------------------------
    def on_event(self, event: Any) -> None:
        data = event.data
        if event.site_id is None:
            return
        if event.type == "message.stored" and data.get("sender_kind") == "visitor":
            delivery = self.kernel.delivery
            cached = delivery.cached(event.site_id, data["conversation_id"]) if delivery else None
            if cached is not None and cached.state != BOT:
                return  # not a bot's conversation (the cache says so): no task for it
            self._later(self.forward(event.site_id, data["conversation_id"], int(data["seq"])))
        elif event.type == "conversation.started":
            self._later(self.forward(event.site_id, data["conversation_id"], None))

    def _later(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def held(self, site_id: str, conversation_id: str) -> tuple[Any, dict] | None:
        """(conversation, bot) when an active bot holds the conversation now."""
        delivery = self.kernel.delivery
        conversation = (
            await delivery.conversation(site_id, conversation_id)
            if delivery is not None
            else await self.storage.get_conversation(site_id, conversation_id)
        )
        if conversation is None or conversation.state != BOT:
            return None
        bot = await self.bot_of_site(site_id)
        if bot is None or conversation.meta.get(META) != bot["id"]:
            return None
        return conversation, bot

    async def forward(self, site_id: str, conversation_id: str, seq: int | None) -> None:
        try:
            found = await self.held(site_id, conversation_id)
            if found is None:
                return
            conversation, bot = found
            visitor = await self.storage.get_visitor(site_id, conversation.visitor_id)
            payload: dict[str, Any] = {
                "type": "conversation.started" if seq is None else "message.created",
                "site_id": site_id,
                "conversation_id": conversation_id,
                "visitor": {
                    "id": conversation.visitor_id,
                    "name": visitor.name if visitor else None,
                    "language": (visitor.attributes.get("language") if visitor else None),
                },
            }
            if seq is not None:
                (message,) = await self.storage.list_messages(
                    site_id, conversation_id, after_seq=seq - 1, limit=1
                )
                payload["message"] = {"seq": message.seq, "cid": message.cid,
                                      "text": message.text, "type": message.type}  # fmt: skip
            await self.post(bot, payload)
        except Exception:
            log.exception("agent bot: forwarding %s/%s failed", conversation_id, seq)

    async def post(self, bot: dict, payload: dict) -> None:
        body = orjson.dumps(payload)
        assert self.http is not None
        for attempt in range(ATTEMPTS):
            headers = {
                "Content-Type": "application/json",
                "X-Kefu-Event": payload["type"],
                signing.HEADER: signing.sign(bot["secret"], body),
            }
            try:
                async with self.http.post(bot["url"], data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status < 300:
                        self.counts["posted"] += 1
                        return
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                log.warning("agent bot %s: %s", bot["id"], exc)
            await asyncio.sleep(0.5 * 2**attempt)
        self.counts["failed"] += 1
        log.error("agent bot %s did not take %s", bot["id"], payload["type"])

    # -- from the bot -------------------------------------------------------------------
    async def _held_by(self, principal: Any, conversation_id: str) -> Any:
        if principal is None or principal.kind != "bot":
            raise ApiError(403, "forbidden", "a bot token is required")
        conversation = await self.storage.get_conversation(principal.site_id, conversation_id)
        if conversation is None:
            raise ApiError(404, "conversation_not_found", "no such conversation in this site")
        if conversation.state != BOT or conversation.meta.get(META) != principal.id:
            raise ApiError(409, "not_held", "this bot does not hold the conversation (now)")
        return conversation

    async def say(self, principal: Any, conversation_id: str, cid: str, text: str) -> Message:
        conversation = await self._held_by(principal, conversation_id)
        delivery = self.kernel.delivery
        if delivery is None:
            raise ApiError(503, "unavailable", "no gateway runs")
        message = Message(conversation.site_id, conversation.id, cid, "bot", principal.id,
                          text=text)  # fmt: skip
        stored, _ = await delivery.deliver(conversation, message, transport="agent_bot")
        return stored

    async def hand_off(self, principal: Any, conversation_id: str, reason: str | None) -> Any:
        fresh = await self._held_by(principal, conversation_id)
        now = time.time()
        fresh.state, fresh.updated_at = QUEUED, now
        handoff = {"reason": reason, "at": now, "bot": principal.id}
        fresh.meta = {**fresh.meta, "queued_at": now, "bot_handoff": handoff}
        if not await self.storage.update_conversation(fresh, if_state=BOT):
            raise ApiError(409, "not_held", "the conversation moved meanwhile")
        if self.kernel.delivery is not None:
            self.kernel.delivery.forget(fresh.site_id, fresh.id)
        await self.kernel.emit("bot.handoff", fresh.site_id, conversation_id=fresh.id,
                               reason=reason, department=fresh.department,
                               bot_id=principal.id)  # fmt: skip
        await self.kernel.emit("conversation.queued", fresh.site_id, conversation_id=fresh.id)
        return fresh
