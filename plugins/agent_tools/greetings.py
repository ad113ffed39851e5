"""The first and the last word: the welcome message, and the leave-a-message form.

- **Welcome.** When a visitor starts a conversation, the site's ``welcome_message``
  (``PUT /v1/welcome_message``; else ``[agent_tools] welcome_message``) is stored as a
  ``system`` message with placeholders filled in and delivered like any message.
  It is sent after the ``started`` reply, so the widget knows the conversation.
- **Leave a message.** When nobody can answer (the ``queue`` frame's ``available``
  is false; before a chat, ``GET /v1/availability`` says so and no bot serves the
  site, ``kefu_bot_serves``), the widget offers a form: name, e-mail and text. The
  text becomes a visitor message of the visitor's open conversation (a new one if
  none; after a bot's handoff, the handed-off one), the visitor record gets the name and e-mail,
  ``meta["offline"]`` marks it for the team and the conversation waits in the
  queue, routed as soon as someone can take it. ``offline_message.created`` is
  emitted; agents list them with ``GET /v1/offline_messages``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kefu.core.domain import RESOLVED, Conversation, Message, new_id
from kefu.core.errors import ApiError
from kefu.core.types import Principal
from kefu.plugins.agent_tools.placeholders import render, values_for

log = logging.getLogger(__name__)

WELCOME_KEY = "welcome_message"
WELCOME_ZH_KEY = "welcome_message_zh"  # for visitors whose widget is in Chinese
OFFLINE_TRANSPORT = "offline_form"
SCAN = 500


class Greetings:
    """Welcome messages and offline messages of one kernel (``edits``: :class:`~.edits.Edits`)."""

    def __init__(self, kernel: Any, edits: Any) -> None:
        self.kernel = kernel
        self.edits = edits

    @property
    def gateway(self) -> Any:
        return self.kernel.delivery

    # -- welcome ----------------------------------------------------------------------
    async def welcome_text(self, site_id: str) -> tuple[str, str]:
        """The welcome message of a site and where it comes from (``site`` or ``config``)."""
        site = await self.kernel.storage.get_site(site_id)
        own = site.settings.get(WELCOME_KEY) if site else None
        if isinstance(own, str):
            return own, "site"
        return self.kernel.config.section("agent_tools").welcome_message, "config"

    async def welcome_text_zh(self, site_id: str) -> str:
        """The message for Chinese visitors ("": they get :meth:`welcome_text`). Where the
        site has its own text, only its own Chinese one counts (else the configured one)."""
        site = await self.kernel.storage.get_site(site_id)
        if site and isinstance(site.settings.get(WELCOME_KEY), str):
            own = site.settings.get(WELCOME_ZH_KEY)
            return own if isinstance(own, str) else ""
        return self.kernel.config.section("agent_tools").welcome_message_zh

    async def set_welcome(
        self, principal: Principal, text: str | None, text_zh: str | None = None
    ) -> tuple[str, str]:
        """Set the site's own text ("" for none) and its Chinese one, or None to use the
        configured ones."""
        if not await self.kernel.hooks.permits(principal, "sites.manage", principal.site_id):
            raise ApiError(403, "forbidden", "admins set the welcome message")

        def change(settings: dict) -> None:
            settings.pop(WELCOME_KEY, None)
            settings.pop(WELCOME_ZH_KEY, None)
            if text is not None:
                settings[WELCOME_KEY] = text
                if text_zh:
                    settings[WELCOME_ZH_KEY] = text_zh

        await self.edits.site(principal.site_id, change)
        await self.kernel.emit(
            "site.welcome_message_changed", principal.site_id, text=text, by_id=principal.id
        )
        return await self.welcome_text(principal.site_id)

    async def welcome(self, site_id: str, conversation_id: str) -> None:
        """Store and deliver the welcome message of a new conversation (once: cid ``welcome``)."""
        try:
            template, _ = await self.welcome_text(site_id)
            conversation = await self.kernel.storage.get_conversation(site_id, conversation_id)
            if not template.strip() or conversation is None:
                return
            visitor = await self.kernel.storage.get_visitor(site_id, conversation.visitor_id)
            language = str((visitor.attributes if visitor else {}).get("language") or "")
            if language.lower().startswith("zh"):  # the widget's language (docs/ui.md)
                template = (await self.welcome_text_zh(site_id)).strip() or template
            text = render(template, await values_for(self.kernel, conversation))
            message = Message(site_id, conversation_id, "welcome", "system", "welcome", text=text)
            if self.gateway is not None:
                await self.gateway.deliver(conversation, message, transport="system")
        except Exception:
            log.exception("welcome message for %s failed", conversation_id)

    # -- leave a message ----------------------------------------------------------------
    async def leave_message(
        self,
        principal: Principal,
        *,
        email: str,
        text: str,
        name: str | None = None,
        department: str | None = None,
        cid: str | None = None,
    ) -> dict[str, Any]:
        if principal.kind != "visitor":
            raise ApiError(403, "forbidden", "visitors leave messages; agents answer them")
        kernel, site_id = self.kernel, principal.site_id
        if not await kernel.hooks.permits(principal, "conversation.start", site_id):
            raise ApiError(403, "forbidden", "you may not leave a message here")
        conversation, created = await self._open_conversation(principal, department)
        await self._remember_visitor(principal, name, email)
        message = Message(
            site_id,
            conversation.id,
            cid or f"offline-{new_id()}",
            "visitor",
            principal.id,
            text=text,
            meta={"offline": True},
        )
        if self.gateway is not None:
            stored, _ = await self.gateway.deliver(conversation, message, transport="offline")
        else:  # no gateway running: stored all the same, delivered on the next resume
            stored, _ = await kernel.storage.append_message(message)
        note = {"name": name, "email": email, "text": text, "seq": stored.seq, "at": time.time()}

        def mark(record: Conversation) -> None:
            record.meta = {**record.meta, "offline": note}

        conversation, _ = await self.edits.conversation(site_id, conversation.id, mark)
        if created:
            await self._announce_new(conversation, department)
        await kernel.emit(
            "offline_message.created",
            site_id,
            conversation_id=conversation.id,
            visitor_id=principal.id,
            seq=stored.seq,
        )
        return {"conversation_id": conversation.id, "seq": stored.seq, "created": created}

    async def _open_conversation(
        self, principal: Principal, department: str | None
    ) -> tuple[Conversation, bool]:
        storage = self.kernel.storage
        current = await storage.list_conversations(
            principal.site_id, visitor_id=principal.id, limit=20
        )
        conversation = next((c for c in current if c.state != RESOLVED), None)
        if conversation is not None:
            return conversation, False
        fresh = Conversation(
            id=new_id(),
            site_id=principal.site_id,
            visitor_id=principal.id,
            department=department,
            meta={"transport": OFFLINE_TRANSPORT},
        )
        return await storage.open_conversation(fresh)  # another process may have won

    async def _remember_visitor(self, principal: Principal, name: str | None, email: str) -> None:
        visitor = await self.kernel.storage.get_visitor(principal.site_id, principal.id)
        if visitor is None:
            return
        visitor.email = email
        if name:
            visitor.name = name
        await self.kernel.storage.upsert_visitor(visitor)

    async def _announce_new(self, conversation: Conversation, department: str | None) -> None:
        site_id = conversation.site_id
        if self.gateway is not None:
            frame = {
                "op": "conversation",
                "event": "offline_message",
                "conversation": {
                    "id": conversation.id,
                    "visitor_id": conversation.visitor_id,
                    "state": conversation.state,
                    "department": conversation.department,
                },
            }
            await self.gateway.publish_site_agents(site_id, frame)
        await self.kernel.emit(
            "conversation.started",
            site_id,
            conversation_id=conversation.id,
            visitor_id=conversation.visitor_id,
            department=department,
            transport=OFFLINE_TRANSPORT,
        )
        await self.kernel.emit("conversation.queued", site_id, conversation_id=conversation.id)

    async def offline_messages(self, principal: Principal, limit: int) -> list[dict[str, Any]]:
        """The latest conversations that hold a left message, newest first."""
        if principal.kind != "agent" or not await self.kernel.hooks.permits(
            principal, "conversation.list", principal.site_id
        ):
            raise ApiError(403, "forbidden", "agents read left messages")
        recent = await self.kernel.storage.list_conversations(principal.site_id, limit=SCAN)
        found = [c for c in recent if isinstance(c.meta.get("offline"), dict)]
        return [
            {
                "conversation_id": c.id,
                "visitor_id": c.visitor_id,
                "state": c.state,
                "assignee_id": c.assignee_id,
                "department": c.department,
                **{k: c.meta["offline"].get(k) for k in ("name", "email", "text", "seq", "at")},
            }
            for c in found[:limit]
        ]
