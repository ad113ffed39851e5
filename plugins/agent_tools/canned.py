"""Canned replies: saved answers an agent sends by typing ``/shortcut``.

A reply belongs to the whole site (``scope: "site"``, managed by admins, kept in the
site's settings under ``canned_replies``, at most :data:`MAX_REPLIES`) or to one agent
(``scope: "agent"``, managed by that agent, kept apart as storage records of kind
:data:`RECORD_KIND`, at most :data:`MAX_AGENT_REPLIES` per agent): an agent's own
replies never grow the site record nor use the site's quota. Agent replies written by
earlier versions into the site's settings are still read, changed and deleted there.
When an agent sends a text message that is exactly ``/shortcut``, the pipeline
processor :data:`PROCESSOR` replaces it, before it is stored, with the reply's text,
placeholders filled in (:mod:`placeholders`): the agent's own reply first, else the
site's. ``meta["canned"]`` records the shortcut. Text that names no reply is sent as typed.
"""

from __future__ import annotations

import re
import time
from typing import Any

from kefu.core.domain import Message, new_id
from kefu.core.errors import ApiError
from kefu.core.types import Principal, Processor
from kefu.plugins.agent_tools.placeholders import render, values_for

KEY = "canned_replies"
SHORTCUT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
_TYPED = re.compile(r"^\s*/([a-z0-9][a-z0-9_-]{0,31})\s*$")


def _may_expand(message: Message) -> bool:
    """What :meth:`CannedReplies.expand` may change: an agent's text that is a shortcut."""
    return (
        message.sender_kind == "agent"
        and message.type == "text"
        and _TYPED.match(message.text) is not None
    )


MAX_REPLIES = 500
#: Private replies one agent may keep.
MAX_AGENT_REPLIES = 100
RECORD_KIND = "agent_tools.canned"
PRIORITY = 40  # after the REST API's attachment check; a plugin may rewrite the result later


def entries(settings: dict[str, Any]) -> list[dict]:
    """The replies a site's settings hold, complete (entries written by other tools, e.g. the
    web admin's ``{"shortcut", "text"}``, are site replies with an id made of the shortcut)."""
    found = []
    for raw in settings.get(KEY) or ():
        if not (isinstance(raw, dict) and isinstance(raw.get("shortcut"), str)):
            continue
        if not isinstance(raw.get("text"), str):
            continue
        created = raw.get("created_at") or 0.0
        found.append(
            {
                "id": raw.get("id") or f"site-{raw['shortcut']}",
                "shortcut": raw["shortcut"],
                "text": raw["text"],
                "scope": "agent" if raw.get("scope") == "agent" else "site",
                "agent_id": raw.get("agent_id"),
                "created_at": created,
                "updated_at": raw.get("updated_at") or created,
            }
        )
    return found


def visible(replies: list[dict], principal: Principal) -> list[dict]:
    """The site's replies and the caller's own, site ones first, each by shortcut."""
    mine = [r for r in replies if r["scope"] == "agent" and r.get("agent_id") == principal.id]
    shared = [r for r in replies if r["scope"] == "site"]
    return sorted(shared, key=lambda r: r["shortcut"]) + sorted(mine, key=lambda r: r["shortcut"])


class CannedReplies:
    """Canned replies of one kernel (``edits``: :class:`~.edits.Edits`)."""

    def __init__(self, kernel: Any, edits: Any) -> None:
        self.kernel = kernel
        self.edits = edits

    async def _require_agent(self, principal: Principal) -> None:
        if principal.kind != "agent":
            raise ApiError(403, "forbidden", "canned replies are for agents")

    async def _may_manage(self, principal: Principal, reply: dict) -> None:
        if reply["scope"] == "agent" and reply.get("agent_id") == principal.id:
            return
        if reply["scope"] == "site" and await self.kernel.hooks.permits(
            principal, "canned_replies.manage", principal.site_id
        ):
            return
        raise ApiError(403, "forbidden", "site replies are managed by admins, yours by you")

    async def _own(self, principal: Principal) -> dict[str, Any]:
        """The agent's private replies kept as records, by reply id (with their records)."""
        records = await self.kernel.storage.list_records(
            principal.site_id, RECORD_KIND, prefix=f"{principal.id}.", limit=MAX_AGENT_REPLIES + 1
        )
        return {r.data["id"]: r for r in records if isinstance(r.data.get("id"), str)}

    async def _all(self, principal: Principal) -> list[dict]:
        site = await self.kernel.storage.get_site(principal.site_id)
        replies = entries(site.settings) if site else []
        replies += [r.data for r in (await self._own(principal)).values()]
        return visible(replies, principal)

    async def list(self, principal: Principal) -> list[dict]:
        await self._require_agent(principal)
        return await self._all(principal)

    async def _create_own(self, principal: Principal, reply: dict) -> None:
        own = await self._own(principal)
        if len(own) >= MAX_AGENT_REPLIES:
            message = f"an agent keeps {MAX_AGENT_REPLIES} replies of its own"
            raise ApiError(409, "too_many_replies", message)
        _unique(await self._all(principal), reply)
        record_id = f"{principal.id}.{reply['id']}"
        await self.kernel.storage.put_record(
            principal.site_id, RECORD_KIND, record_id, reply, expect_version=0
        )

    async def create(self, principal: Principal, shortcut: str, text: str, scope: str) -> dict:
        await self._require_agent(principal)
        reply = {
            "id": new_id(),
            "shortcut": shortcut,
            "text": text,
            "scope": scope,
            "agent_id": principal.id if scope == "agent" else None,
            "created_at": time.time(),
        }
        reply["updated_at"] = reply["created_at"]
        await self._may_manage(principal, reply)
        if scope == "agent":
            await self._create_own(principal, reply)
            await self._changed(principal, "created", reply)
            return reply

        def add(settings: dict) -> None:
            replies = entries(settings)
            if len(replies) >= MAX_REPLIES:
                raise ApiError(409, "too_many_replies", f"a site keeps {MAX_REPLIES} replies")
            _unique(replies, reply)
            settings[KEY] = [*replies, reply]

        await self.edits.site(principal.site_id, add)
        await self._changed(principal, "created", reply)
        return reply

    async def update(
        self, principal: Principal, reply_id: str, shortcut: str | None, text: str | None
    ) -> dict:
        await self._require_agent(principal)
        found = await self._find(principal, reply_id)
        await self._may_manage(principal, found)
        record = (await self._own(principal)).get(reply_id)
        if record is not None:
            reply = {**record.data, "updated_at": time.time()}
            if shortcut is not None:
                reply["shortcut"] = shortcut
            if text is not None:
                reply["text"] = text
            _unique([r for r in await self._all(principal) if r["id"] != reply_id], reply)
            await self.kernel.storage.put_record(
                principal.site_id, RECORD_KIND, record.id, reply, expect_version=record.version
            )
            await self._changed(principal, "updated", reply)
            return reply

        def change(settings: dict) -> dict:
            replies = entries(settings)
            index = next((i for i, r in enumerate(replies) if r["id"] == reply_id), None)
            if index is None:
                raise ApiError(404, "not_found", "canned reply not found")
            reply = {**replies[index], "updated_at": time.time()}
            if shortcut is not None:
                reply["shortcut"] = shortcut
            if text is not None:
                reply["text"] = text
            _unique(replies[:index] + replies[index + 1 :], reply)
            replies[index] = reply
            settings[KEY] = replies
            return reply

        _, reply = await self.edits.site(principal.site_id, change)
        await self._changed(principal, "updated", reply)
        return reply

    async def delete(self, principal: Principal, reply_id: str) -> None:
        await self._require_agent(principal)
        found = await self._find(principal, reply_id)
        await self._may_manage(principal, found)
        record = (await self._own(principal)).get(reply_id)
        if record is not None:
            await self.kernel.storage.delete_record(principal.site_id, RECORD_KIND, record.id)
            await self._changed(principal, "deleted", found)
            return

        def drop(settings: dict) -> None:
            settings[KEY] = [r for r in entries(settings) if r["id"] != reply_id]

        await self.edits.site(principal.site_id, drop)
        await self._changed(principal, "deleted", found)

    async def _find(self, principal: Principal, reply_id: str) -> dict:
        found = next((r for r in await self._all(principal) if r["id"] == reply_id), None)
        if found is None:
            raise ApiError(404, "not_found", "canned reply not found")  # others' are private
        return found

    async def _changed(self, principal: Principal, what: str, reply: dict) -> None:
        await self.kernel.emit(
            f"canned_reply.{what}",
            principal.site_id,
            reply_id=reply["id"],
            shortcut=reply["shortcut"],
            scope=reply["scope"],
            agent_id=principal.id,
        )

    # -- sending ------------------------------------------------------------------------
    async def expand(self, message: Message, context: dict[str, Any]) -> Message | None:
        """The pipeline processor: ``/shortcut`` from an agent becomes the reply's text."""
        if message.sender_kind != "agent" or message.type != "text":
            return None
        typed = _TYPED.match(message.text)
        if typed is None:
            return None
        replies = await self._all(context["principal"])
        matching = [r for r in replies if r["shortcut"] == typed.group(1)]
        if not matching:
            return None
        reply = matching[-1]  # the agent's own comes after the site's
        values = await values_for(self.kernel, context["conversation"], message.sender_id)
        message.text = render(reply["text"], values)
        message.meta = {**message.meta, "canned": reply["shortcut"]}
        return message

    def processor(self) -> Processor:
        return Processor("agent_tools.canned_replies", PRIORITY, self.expand, wants=_may_expand)


def _unique(replies: list[dict], reply: dict) -> None:
    """One shortcut per scope: per site for site replies, per agent for agents' own."""
    for other in replies:
        if (
            other["shortcut"] == reply["shortcut"]
            and other["scope"] == reply["scope"]
            and other.get("agent_id") == reply.get("agent_id")
        ):
            raise ApiError(409, "shortcut_taken", f"/{reply['shortcut']} exists already")
