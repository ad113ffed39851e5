"""The storage interface every backend plugin implements.

One shared contract suite (``tests/storage_contract/``) runs against every
backend. Rules every method keeps:

- every read and write is scoped by ``site_id``; a record of another site is
  "not found", never returned;
- ``append_message`` is idempotent on ``(site_id, conversation_id, cid)``
  and assigns ``seq`` = previous + 1 per conversation; it returns only after
  the write is durable (backends batch concurrent appends into one commit);
- update methods return False when the record does not exist or a
  compare-and-set condition does not hold, so callers can claim atomically.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from kefu.core.domain import Agent, Conversation, Message, Site, Visitor


class StorageError(Exception):
    """A backend failure the caller may report (duplicate key, lost connection)."""


class DuplicateError(StorageError):
    """A unique field (widget key, agent e-mail in a site) is already taken."""


@runtime_checkable
class StorageBackend(Protocol):
    name: str

    # -- lifecycle ------------------------------------------------------------
    async def open(self) -> None:
        """Connect, create tables or indexes. Called once at start-up."""

    async def close(self) -> None:
        """Flush pending writes and disconnect. Called once at shutdown."""

    async def ping(self) -> None:
        """Raise when the backend cannot serve (used by ``/readyz``)."""

    # -- sites ----------------------------------------------------------------
    async def create_site(self, site: Site) -> Site: ...
    async def get_site(self, site_id: str) -> Site | None: ...
    async def get_site_by_widget_key(self, widget_key: str) -> Site | None: ...
    async def list_sites(self) -> list[Site]: ...
    async def update_site(self, site: Site) -> bool: ...

    # -- agents ---------------------------------------------------------------
    async def create_agent(self, agent: Agent) -> Agent:
        """Raises :class:`DuplicateError` when the e-mail is taken in that site."""

    async def get_agent(self, site_id: str, agent_id: str) -> Agent | None: ...
    async def get_agent_by_email(self, site_id: str, email: str) -> Agent | None: ...
    async def list_agents(self, site_id: str) -> list[Agent]: ...
    async def update_agent(self, agent: Agent) -> bool: ...

    # -- visitors -------------------------------------------------------------
    async def upsert_visitor(self, visitor: Visitor) -> Visitor: ...
    async def get_visitor(self, site_id: str, visitor_id: str) -> Visitor | None: ...

    # -- conversations --------------------------------------------------------
    async def create_conversation(self, conversation: Conversation) -> Conversation: ...
    async def get_conversation(self, site_id: str, conversation_id: str) -> Conversation | None: ...

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
        """Newest ``updated_at`` first; ``before`` pages by ``updated_at``."""

    async def update_conversation(
        self,
        conversation: Conversation,
        *,
        if_state: str | None = None,
        if_assignee: Any = ...,
    ) -> bool:
        """Write every field except ``last_seq``; with ``if_state`` / ``if_assignee``
        only when the stored values still match (compare-and-set)."""

    # -- messages -------------------------------------------------------------
    async def append_message(self, message: Message) -> tuple[Message, bool]:
        """Store durably; return ``(stored, created)``. A repeated cid returns the
        first stored message and ``created=False``. Raises :class:`StorageError`
        when the conversation does not exist in that site."""

    async def list_messages(
        self, site_id: str, conversation_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[Message]:
        """Messages with ``seq > after_seq``, oldest first (replay on resume)."""

    async def list_messages_before(
        self, site_id: str, conversation_id: str, *, before_seq: int, limit: int = 50
    ) -> list[Message]:
        """The ``limit`` messages just before ``before_seq``, oldest first (history pages)."""
