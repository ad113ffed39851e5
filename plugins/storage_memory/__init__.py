"""In-memory storage (``[storage] backend = "memory"``): for tests and demos; forgets on exit.

It keeps the whole contract of :class:`kefu.core.storage.StorageBackend`: site
scoping, per-conversation ``seq``, ``cid`` idempotency and compare-and-set
updates. Every method runs without an ``await`` between its read and its
write, so on one event loop each call is atomic. Records are copied in and
out: a caller mutating what it got back never changes what is stored.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, TypeVar

import orjson

from kefu.core.domain import RESOLVED, Agent, Conversation, Message, Site, Visitor
from kefu.core.reports import FACTS_PAGE, ConversationFacts, facts_of
from kefu.core.storage import (
    SEARCH_LIMIT,
    UNCHANGED,
    BlobInfo,
    ConversationFilter,
    DuplicateError,
    Record,
    StorageError,
    VersionConflict,
    contact_text,
    email_key,
    holds_terms,
    search_terms,
)
from kefu.hooks import hookimpl

R = TypeVar("R")


def _copy(record: R) -> R:
    return copy.deepcopy(record)


def _storable(record: R) -> R:
    """A copy to keep; refuses what a real backend could not store either (non-JSON data)."""
    try:
        orjson.dumps(dataclasses.asdict(record))  # type: ignore[call-overload]
    except TypeError as exc:
        raise StorageError(f"{type(record).__name__}: {exc}") from None
    return _copy(record)


class MemoryStorage:
    """Dictionaries keyed by ``(site_id, id)``; nothing is shared between sites."""

    name = "memory"

    def __init__(self) -> None:
        self._sites: dict[str, Site] = {}
        self._agents: dict[tuple[str, str], Agent] = {}
        self._visitors: dict[tuple[str, str], Visitor] = {}
        self._conversations: dict[tuple[str, str], Conversation] = {}
        self._messages: dict[tuple[str, str], list[Message]] = {}
        self._by_cid: dict[tuple[str, str, str], Message] = {}
        self._records: dict[tuple[str, str], dict[str, Record]] = {}
        self._open: dict[tuple[str, str], str] = {}  # (site, visitor) -> open conversation
        self._blobs: dict[tuple[str, str], tuple[BlobInfo, bytes]] = {}

    # -- lifecycle ------------------------------------------------------------
    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    # -- sites ----------------------------------------------------------------
    def _widget_key_taken(self, widget_key: str, site_id: str) -> bool:
        return any(s.widget_key == widget_key and s.id != site_id for s in self._sites.values())

    async def create_site(self, site: Site) -> Site:
        if site.id in self._sites:
            raise DuplicateError(f"site {site.id!r} already exists")
        if self._widget_key_taken(site.widget_key, site.id):
            raise DuplicateError("widget key already taken")
        self._sites[site.id] = _storable(site)
        return _copy(site)

    async def get_site(self, site_id: str) -> Site | None:
        site = self._sites.get(site_id)
        return _copy(site) if site else None

    async def get_site_by_widget_key(self, widget_key: str) -> Site | None:
        site = next((s for s in self._sites.values() if s.widget_key == widget_key), None)
        return _copy(site) if site else None

    async def list_sites(self) -> list[Site]:
        return [_copy(s) for s in sorted(self._sites.values(), key=lambda s: (s.created_at, s.id))]

    async def update_site(self, site: Site) -> bool:
        if site.id not in self._sites:
            return False
        if self._widget_key_taken(site.widget_key, site.id):
            raise DuplicateError("widget key already taken")
        self._sites[site.id] = _storable(site)
        return True

    # -- agents ---------------------------------------------------------------
    def _email_taken(self, agent: Agent) -> bool:
        key = email_key(agent.email)
        return any(
            a.site_id == agent.site_id and a.id != agent.id and email_key(a.email) == key
            for a in self._agents.values()
        )

    async def create_agent(self, agent: Agent) -> Agent:
        if (agent.site_id, agent.id) in self._agents:
            raise DuplicateError(f"agent {agent.id!r} already exists")
        if self._email_taken(agent):
            raise DuplicateError(f"e-mail {agent.email!r} is already taken in this site")
        self._agents[agent.site_id, agent.id] = _storable(agent)
        return _copy(agent)

    async def get_agent(self, site_id: str, agent_id: str) -> Agent | None:
        agent = self._agents.get((site_id, agent_id))
        return _copy(agent) if agent else None

    async def get_agent_by_email(self, site_id: str, email: str) -> Agent | None:
        key = email_key(email)
        for agent in self._agents.values():
            if agent.site_id == site_id and email_key(agent.email) == key:
                return _copy(agent)
        return None

    async def list_agents(self, site_id: str) -> list[Agent]:
        found = [a for a in self._agents.values() if a.site_id == site_id]
        return [_copy(a) for a in sorted(found, key=lambda a: (a.created_at, a.id))]

    async def update_agent(self, agent: Agent) -> bool:
        if (agent.site_id, agent.id) not in self._agents:
            return False
        if self._email_taken(agent):
            raise DuplicateError(f"e-mail {agent.email!r} is already taken in this site")
        self._agents[agent.site_id, agent.id] = _storable(agent)
        return True

    # -- visitors -------------------------------------------------------------
    async def upsert_visitor(self, visitor: Visitor) -> Visitor:
        stored = _storable(visitor)
        old = self._visitors.get((visitor.site_id, visitor.id))
        if old is not None:
            stored.created_at = old.created_at
        self._visitors[visitor.site_id, visitor.id] = stored
        return _copy(stored)

    async def get_visitor(self, site_id: str, visitor_id: str) -> Visitor | None:
        visitor = self._visitors.get((site_id, visitor_id))
        return _copy(visitor) if visitor else None

    # -- conversations --------------------------------------------------------
    async def create_conversation(self, conversation: Conversation) -> Conversation:
        key = (conversation.site_id, conversation.id)
        if key in self._conversations:
            raise DuplicateError(f"conversation {conversation.id!r} already exists")
        if conversation.state != RESOLVED and self._open_of(conversation) is not None:
            raise DuplicateError("this visitor already has an open conversation")
        stored = _storable(conversation)
        stored.last_seq = 0
        self._conversations[key] = stored
        self._messages[key] = []
        self._track_open(stored)
        return _copy(stored)

    def _open_of(self, conversation: Conversation) -> Conversation | None:
        """The visitor's open conversation other than this one."""
        open_id = self._open.get((conversation.site_id, conversation.visitor_id))
        if open_id is None or open_id == conversation.id:
            return None
        return self._conversations[conversation.site_id, open_id]

    def _track_open(self, conversation: Conversation) -> None:
        key = (conversation.site_id, conversation.visitor_id)
        if conversation.state != RESOLVED:
            self._open[key] = conversation.id
        elif self._open.get(key) == conversation.id:
            del self._open[key]

    async def open_conversation(self, conversation: Conversation) -> tuple[Conversation, bool]:
        existing = self._open_of(conversation)
        if existing is not None:
            return _copy(existing), False
        return await self.create_conversation(conversation), True

    async def get_conversation(self, site_id: str, conversation_id: str) -> Conversation | None:
        conversation = self._conversations.get((site_id, conversation_id))
        return _copy(conversation) if conversation else None

    async def list_conversations(
        self,
        site_id: str,
        *,
        state: str | None = None,
        assignee_id: str | None = None,
        visitor_id: str | None = None,
        limit: int = 50,
        before: float | None = None,
    ) -> list[Conversation]:
        found = [
            c
            for c in self._conversations.values()
            if c.site_id == site_id
            and (state is None or c.state == state)
            and (assignee_id is None or c.assignee_id == assignee_id)
            and (visitor_id is None or c.visitor_id == visitor_id)
            and (before is None or c.updated_at < before)
        ]
        found.sort(key=lambda c: (c.updated_at, c.id), reverse=True)
        return [_copy(c) for c in found[: max(limit, 0)]]

    async def update_conversation(
        self,
        conversation: Conversation,
        *,
        if_state: str | None = None,
        if_assignee: Any = UNCHANGED,
        if_version: int | None = None,
    ) -> bool:
        stored = self._conversations.get((conversation.site_id, conversation.id))
        if stored is None:
            return False
        if if_state is not None and stored.state != if_state:
            return False
        if if_assignee is not UNCHANGED and stored.assignee_id != if_assignee:
            return False
        if if_version is not None and stored.version != if_version:
            return False
        if conversation.state != RESOLVED and self._open_of(conversation) is not None:
            raise DuplicateError("this visitor already has an open conversation")
        updated = _storable(conversation)
        updated.last_seq = stored.last_seq
        updated.version = stored.version + 1
        self._conversations[conversation.site_id, conversation.id] = updated
        self._track_open(dataclasses.replace(stored, state=RESOLVED))  # its old key goes
        self._track_open(updated)
        return True

    # -- messages -------------------------------------------------------------
    async def append_message(self, message: Message) -> tuple[Message, bool]:
        key = (message.site_id, message.conversation_id)
        conversation = self._conversations.get(key)
        if conversation is None:
            raise StorageError(f"conversation {message.conversation_id!r} not found in this site")
        existing = self._by_cid.get((*key, message.cid))
        if existing is not None:
            return _copy(existing), False
        stored = _storable(message)
        conversation.last_seq += 1
        stored.seq = conversation.last_seq
        conversation.updated_at = max(conversation.updated_at, stored.created_at)
        self._messages[key].append(stored)
        self._by_cid[(*key, message.cid)] = stored
        return _copy(stored), True

    async def list_messages(
        self, site_id: str, conversation_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[Message]:
        messages = self._messages.get((site_id, conversation_id), [])
        # seq n sits at index n - 1: the list is gap-free by construction
        start = max(after_seq, 0)
        return [_copy(m) for m in messages[start : start + max(limit, 0)]]

    async def list_messages_before(
        self, site_id: str, conversation_id: str, *, before_seq: int, limit: int = 50
    ) -> list[Message]:
        messages = self._messages.get((site_id, conversation_id), [])
        end = min(max(before_seq - 1, 0), len(messages))
        return [_copy(m) for m in messages[max(end - max(limit, 0), 0) : end]]

    # -- plugin records ---------------------------------------------------------
    async def get_record(self, site_id: str, kind: str, record_id: str) -> Record | None:
        record = self._records.get((site_id, kind), {}).get(record_id)
        return _copy(record) if record else None

    async def put_record(
        self,
        site_id: str,
        kind: str,
        record_id: str,
        data: dict[str, Any],
        *,
        expect_version: int | None = None,
    ) -> Record:
        try:
            stored_data = orjson.loads(orjson.dumps(data))
        except TypeError as exc:
            raise StorageError(f"record {kind}/{record_id}: {exc}") from None
        records = self._records.setdefault((site_id, kind), {})
        current = records.get(record_id)
        version = current.version if current else 0
        if expect_version is not None and expect_version != version:
            raise VersionConflict(f"record {kind}/{record_id} is at version {version}")
        record = Record(site_id, kind, record_id, stored_data, version + 1)
        records[record_id] = record
        return _copy(record)

    async def list_records(
        self,
        site_id: str,
        kind: str,
        *,
        prefix: str = "",
        after: str = "",
        limit: int = 100,
    ) -> list[Record]:
        records = self._records.get((site_id, kind), {})
        ids = sorted(i for i in records if i.startswith(prefix) and i > after)[: max(limit, 0)]
        return [_copy(records[i]) for i in ids]

    async def delete_record(
        self, site_id: str, kind: str, record_id: str, *, expect_version: int | None = None
    ) -> bool:
        records = self._records.get((site_id, kind), {})
        current = records.get(record_id)
        version = current.version if current else 0
        if expect_version is not None and expect_version != version:
            raise VersionConflict(f"record {kind}/{record_id} is at version {version}")
        return records.pop(record_id, None) is not None

    # -- file contents (core.storage.BlobStore) ---------------------------------------
    async def put_blob(
        self, site_id: str, blob_id: str, data: bytes, *, mime: str, owner: str = ""
    ) -> BlobInfo:
        if (site_id, blob_id) in self._blobs:
            raise DuplicateError(f"blob {blob_id!r} already exists")
        info = BlobInfo(site_id, blob_id, len(data), mime, time.time(), owner)
        self._blobs[site_id, blob_id] = (info, bytes(data))
        return info

    async def blob_info(self, site_id: str, blob_id: str) -> BlobInfo | None:
        found = self._blobs.get((site_id, blob_id))
        return found[0] if found else None

    async def get_blob(self, site_id: str, blob_id: str) -> tuple[BlobInfo, bytes] | None:
        return self._blobs.get((site_id, blob_id))

    async def read_blob(self, site_id: str, blob_id: str, offset: int, length: int) -> bytes | None:
        found = self._blobs.get((site_id, blob_id))
        return None if found is None else found[1][offset : offset + max(length, 0)]

    async def delete_blob(self, site_id: str, blob_id: str) -> bool:
        return self._blobs.pop((site_id, blob_id), None) is not None

    async def owned_blobs(self, site_id: str, owner: str, *, limit: int = 100) -> list[str]:
        found = [
            b
            for (s, b), (info, _) in self._blobs.items()
            if s == site_id and owner and info.owner == owner
        ]
        return sorted(found)[:limit]

    # -- search, filters and data rights (core.storage.Searchable) -------------------
    async def search_messages(
        self, site_id: str, query: str, *, limit: int = 20, before: float | None = None
    ) -> list[Message]:
        terms = search_terms(query)
        found = [
            m
            for (site, _), messages in self._messages.items()
            if site == site_id
            for m in messages
            if m.type != "event"
            and (before is None or m.created_at < before)
            and holds_terms(m.text, terms)
        ]
        found.sort(key=lambda m: (m.created_at, m.conversation_id, m.seq), reverse=True)
        return [_copy(m) for m in found[: min(max(limit, 0), SEARCH_LIMIT)]]

    async def search_visitors(self, site_id: str, query: str, *, limit: int = 20) -> list[Visitor]:
        terms = search_terms(query)
        found = [
            v
            for v in self._visitors.values()
            if v.site_id == site_id and holds_terms(contact_text(v), terms)
        ]
        found.sort(key=lambda v: (v.last_seen_at, v.id), reverse=True)
        return [_copy(v) for v in found[: min(max(limit, 0), SEARCH_LIMIT)]]

    async def list_visitors(
        self, site_id: str, *, limit: int = 50, before: float | None = None
    ) -> list[Visitor]:
        found = [
            v
            for v in self._visitors.values()
            if v.site_id == site_id and (before is None or v.last_seen_at < before)
        ]
        found.sort(key=lambda v: (v.last_seen_at, v.id), reverse=True)
        return [_copy(v) for v in found[: max(limit, 0)]]

    async def find_conversations(
        self,
        site_id: str,
        where: ConversationFilter,
        *,
        limit: int = 50,
        before: float | None = None,
    ) -> list[Conversation]:
        found = [
            c
            for c in self._conversations.values()
            if c.site_id == site_id
            and (before is None or c.updated_at < before)
            and where.matches(c)
        ]
        found.sort(key=lambda c: (c.updated_at, c.id), reverse=True)
        return [_copy(c) for c in found[: max(limit, 0)]]

    async def redact_message(
        self, site_id: str, conversation_id: str, seq: int, *, text: str, meta: dict[str, Any]
    ) -> bool:
        messages = self._messages.get((site_id, conversation_id), [])
        if not 1 <= seq <= len(messages):
            return False
        stored = messages[seq - 1]
        stored.text, stored.attachment = text, None
        stored.meta = orjson.loads(orjson.dumps(meta))
        return True

    async def delete_visitor(self, site_id: str, visitor_id: str) -> int:
        if self._visitors.pop((site_id, visitor_id), None) is None:
            return -1
        removed = 0
        for key, c in list(self._conversations.items()):
            if c.site_id == site_id and c.visitor_id == visitor_id:
                del self._conversations[key]
                for m in self._messages.pop(key, []):
                    self._by_cid.pop((site_id, c.id, m.cid), None)
                    removed += 1
        self._open.pop((site_id, visitor_id), None)
        return removed

    # -- reports (core.reports.Reportable) ------------------------------------
    async def conversation_facts(
        self,
        site_id: str,
        since: float,
        until: float,
        *,
        after: tuple[float, str] | None = None,
        limit: int = 1000,
    ) -> list[ConversationFacts]:
        found = sorted(
            (
                c
                for c in self._conversations.values()
                if c.site_id == site_id
                and since <= c.created_at < until
                and (after is None or (c.created_at, c.id) > after)
            ),
            key=lambda c: (c.created_at, c.id),
        )[: max(min(limit, FACTS_PAGE), 0)]
        return [facts_of(c, self._messages.get((site_id, c.id), ())) for c in found]


@hookimpl(trylast=True)
def kefu_storage_backends():
    return {"memory": lambda kernel: MemoryStorage()}
