"""A complete external bot for kefu's agent-bot API (docs/integrations.md, "Agent-bot API").

It is a separate service: it needs aiohttp, not kefu. kefu POSTs the conversations it holds
to its webhook; it checks the signature, answers through kefu's REST API with its bot token,
and hands the conversation to a human when the visitor asks for one.

    export KEFU_URL=http://127.0.0.1:8080
    export KEFU_BOT_TOKEN=kb_...   KEFU_BOT_SECRET=whsec_...   # from POST /v1/agent_bots
    python bot.py --port 9000      # and register http://this-host:9000/webhook

Every answer's cid is derived from the visitor message it answers, so a webhook kefu
delivers twice is still answered once (kefu stores a cid once).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import os
import time

from aiohttp import ClientSession, web

log = logging.getLogger("example-bot")
HUMAN = ("human", "agent", "person", "人工", "客服")
ANSWERS = {  # keyword -> answer: a tiny FAQ
    "shipping": "Orders ship within 2 working days; delivery takes 3 to 5 more.",
    "return": "You can return anything within 30 days, in its original packaging.",
    "hours": "A person answers Monday to Friday, 9:00 to 18:00.",
}
GREETING = (
    "Hi, I'm the shop's assistant. Ask me about shipping, returns or opening hours, "
    "or type 'human' to talk to a person."
)


def verify(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """kefu's X-Kefu-Signature: t=<ts>,v1=HMAC-SHA256(secret, "<ts>." + body)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        stamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - stamp) <= tolerance
    return fresh and hmac.compare_digest(expected, parts.get("v1", ""))


def reply_to(text: str) -> tuple[str, bool]:
    """(answer, hand over?)"""
    lowered = text.lower()
    if any(word in lowered for word in HUMAN):
        return "Of course, I'm handing you over to a colleague now.", True
    for keyword, answer in ANSWERS.items():
        if keyword in lowered:
            return answer, False
    return "Sorry, I don't know that one. Try shipping, returns or hours, or type 'human'.", False


class Bot:
    def __init__(self, kefu_url: str, token: str, secret: str) -> None:
        self.kefu_url, self.token, self.secret = kefu_url.rstrip("/"), token, secret
        self.http: ClientSession | None = None
        self.tasks: set[asyncio.Task] = set()

    async def call(self, path: str, body: dict) -> dict:
        assert self.http is not None
        async with self.http.post(
            f"{self.kefu_url}{path}", json=body,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as resp:  # fmt: skip
            data = await resp.json()
            if resp.status >= 300:
                raise RuntimeError(f"{path}: {resp.status} {data}")
            return data

    async def say(self, conversation_id: str, cid: str, text: str) -> None:
        path = f"/v1/agent_bot/conversations/{conversation_id}/messages"
        await self.call(path, {"cid": cid, "text": text})

    async def handle(self, event: dict) -> None:
        conversation_id = event["conversation_id"]
        if event["type"] == "conversation.started":
            await self.say(conversation_id, f"bot-{conversation_id}-hello", GREETING)
            return
        message = event["message"]
        answer, hand_over = reply_to(message["text"])
        await self.say(conversation_id, f"bot-{conversation_id}-{message['seq']}", answer)
        if hand_over:
            await self.call(
                f"/v1/agent_bot/conversations/{conversation_id}/handoff",
                {"reason": "the visitor asked for a person"},
            )

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(self.secret, request.headers.get("X-Kefu-Signature", ""), body):
            return web.Response(status=401, text="bad signature")
        event = json.loads(body)
        task = asyncio.create_task(self._handle_logged(event))  # answer the webhook at once
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.Response(status=204)

    async def _handle_logged(self, event: dict) -> None:
        try:
            await self.handle(event)
            log.info("handled %s of %s", event["type"], event["conversation_id"])
        except Exception:
            log.exception("could not handle %s", event.get("type"))

    async def run(self, host: str, port: int) -> None:
        self.http = ClientSession()
        app = web.Application()
        app.router.add_post("/webhook", self.webhook)
        app.router.add_get("/healthz", lambda _r: web.json_response({"status": "ok"}))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        print(f"example bot listening on http://{host}:{port}/webhook", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            await self.http.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("BOT_PORT", "9000")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    bot = Bot(os.environ["KEFU_URL"], os.environ["KEFU_BOT_TOKEN"], os.environ["KEFU_BOT_SECRET"])
    try:
        asyncio.run(bot.run(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
