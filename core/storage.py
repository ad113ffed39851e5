"""The storage interface every backend plugin implements.

One shared contract suite (``tests/storage_contract/``) runs against every
backend. Rules every method keeps:

- every read and write is scoped by ``site_id``; a record of another site is
  "not found", never returned;
- ``append_message`` is idempotent on ``(site_id, conversation_id, cid)``
  and assigns ``seq`` = previous + 1 per conversation; it returns only after
  the write is durable (backends batch concurrent appends into one commit);
- update methods return False when the record does not exist or a
  compare-and-set condition does not hold, so callers can claim atomically;
- records are values: what a method returns is the caller's copy, and
  changing it changes nothing stored until an update method is called;
- agent e-mails are unique per site and compared case-insensitively
  (:func:`email_key`);
- plugins keep their own documents (knowledge-base articles, webhook
  subscriptions, flow versions, saved views...) as :class:`Record` values
  under a ``kind`` they own, with a version for optimistic concurrency, instead
  of each adding tables to every backend.

Every backend passes ``tests/storage_contract/`` (see ``docs/storage.md``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from kefu.core.domain import Agent, Conversation, Message, Site, Visitor
from kefu.core.pressure import BatchMeter, SojournMeter

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Default of ``update_conversation(if_assignee=...)``: "do not compare the assignee"
#: (``None`` cannot be the sentinel: ``if_assignee=None`` means "only if unassigned").
UNCHANGED: Any = ...


def email_key(email: str) -> str:
    """The form in which agent e-mails are compared and kept unique."""
    return email.strip().lower()


class StorageError(Exception):
    """A backend failure the caller may report (duplicate key, lost connection)."""


class DuplicateError(StorageError):
    """A unique field (widget key, agent e-mail in a site) is already taken."""


class VersionConflict(StorageError):
    """A record changed (or appeared, or went) since the version the caller read."""


#: ``site_id`` of install-level records (not owned by any site).
INSTALL = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """A plugin's document: ``(site_id, kind, id)`` names it, ``version`` counts its writes.

    ``kind`` is the owning plugin's namespace (``"kb.article"``, ``"webhooks.sub"``);
    ``data`` is any JSON object. ``site_id`` is :data:`INSTALL` for install-level
    records. Versions start at 1 and grow by one per write, on every backend.
    """

    site_id: str
    kind: str
    id: str
    data: dict[str, Any]
    version: int = 1
    updated_at: float = dataclasses.field(default_factory=time.time)


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
    async def create_site(self, site: Site) -> Site:
        """Raises :class:`DuplicateError` when the id or the widget key is taken."""

    async def get_site(self, site_id: str) -> Site | None: ...
    async def get_site_by_widget_key(self, widget_key: str) -> Site | None: ...
    async def list_sites(self) -> list[Site]:
        """Oldest first."""

    async def update_site(self, site: Site) -> bool:
        """Write every field; False when absent; :class:`DuplicateError` on a taken widget key."""

    # -- agents ---------------------------------------------------------------
    async def create_agent(self, agent: Agent) -> Agent:
        """Raises :class:`DuplicateError` when the id or the e-mail is taken in that site."""

    async def get_agent(self, site_id: str, agent_id: str) -> Agent | None: ...
    async def get_agent_by_email(self, site_id: str, email: str) -> Agent | None:
        """Case-insensitive match (:func:`email_key`)."""

    async def list_agents(self, site_id: str) -> list[Agent]:
        """Oldest first."""

    async def update_agent(self, agent: Agent) -> bool:
        """Write every field; False when absent; :class:`DuplicateError` on a taken e-mail."""

    # -- visitors -------------------------------------------------------------
    async def upsert_visitor(self, visitor: Visitor) -> Visitor:
        """Insert, or overwrite every field but ``created_at``; return what is stored."""

    async def get_visitor(self, site_id: str, visitor_id: str) -> Visitor | None: ...

    # -- conversations --------------------------------------------------------
    async def create_conversation(self, conversation: Conversation) -> Conversation:
        """Store it with ``last_seq = 0``; :class:`DuplicateError` when the id exists, or
        when it is not resolved and its visitor already has a conversation that is not
        (at most one open conversation per visitor, also across processes)."""

    async def open_conversation(self, conversation: Conversation) -> tuple[Conversation, bool]:
        """The visitor's conversation that is not resolved, or ``conversation`` created:
        ``(stored, created)``. Concurrent callers (in any process) for one visitor get the
        same conversation, exactly one of them ``created=True``."""

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
        if_assignee: Any = UNCHANGED,
        if_version: int | None = None,
    ) -> bool:
        """Write every field except ``last_seq`` and ``version``; with ``if_state`` /
        ``if_assignee`` / ``if_version`` only when the stored values still match
        (compare-and-set, atomic also across processes). ``if_assignee=None`` means
        "only while unassigned". Every write adds one to the stored ``version``: a
        read-modify-write that passes ``if_version=<the version it read>`` never
        overwrites another writer's change (of ``meta``, ``tags``...). Reopening a
        conversation whose visitor has another open one raises :class:`DuplicateError`."""

    # -- messages -------------------------------------------------------------
    async def append_message(self, message: Message) -> tuple[Message, bool]:
        """Store durably; return ``(stored, created)``. A repeated cid returns the
        first stored message and ``created=False``. Raises :class:`StorageError`
        when the conversation does not exist in that site.

        ``message.seq`` is ignored: the stored copy gets the conversation's
        ``last_seq + 1``, with no gap and no duplicate even under concurrent
        callers (and concurrent processes, where the backend is shared). The
        conversation's ``last_seq`` follows, and its ``updated_at`` becomes at
        least ``message.created_at``. The caller's object is not modified."""

    async def list_messages(
        self, site_id: str, conversation_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[Message]:
        """Messages with ``seq > after_seq``, oldest first (replay on resume)."""

    async def list_messages_before(
        self, site_id: str, conversation_id: str, *, before_seq: int, limit: int = 50
    ) -> list[Message]:
        """The ``limit`` messages just before ``before_seq``, oldest first (history pages)."""

    # -- plugin records ---------------------------------------------------------
    async def get_record(self, site_id: str, kind: str, record_id: str) -> Record | None:
        """The record, or None."""

    async def put_record(
        self,
        site_id: str,
        kind: str,
        record_id: str,
        data: dict[str, Any],
        *,
        expect_version: int | None = None,
    ) -> Record:
        """Write ``data`` and return the stored record with its new version.

        ``expect_version=None`` writes unconditionally (creates or replaces);
        ``0`` only creates; ``n`` replaces only while the stored version is ``n``.
        A condition that does not hold raises :class:`VersionConflict` (atomic
        also across processes). ``data`` that is not JSON raises StorageError."""

    async def list_records(
        self,
        site_id: str,
        kind: str,
        *,
        prefix: str = "",
        after: str = "",
        limit: int = 100,
    ) -> list[Record]:
        """Records of one kind in one site with ids starting with ``prefix`` and
        greater than ``after``, in id order, at most ``limit`` (pages: pass the
        last id as ``after``)."""

    async def delete_record(
        self, site_id: str, kind: str, record_id: str, *, expect_version: int | None = None
    ) -> bool:
        """Delete; False when absent. A version condition that does not hold raises
        :class:`VersionConflict`."""


# -- search, filters and data rights (an optional capability) ---------------------------------
#: Most hits one search returns, whatever ``limit`` asks.
SEARCH_LIMIT = 200


@dataclasses.dataclass(frozen=True, slots=True)
class ConversationFilter:
    """What :meth:`Searchable.find_conversations` keeps; ``None`` / empty = any.

    ``assignee_id=""`` keeps unassigned conversations; ``tag`` is one tag the
    conversation carries; ``since`` / ``until`` bound ``created_at`` (``until``
    excluded); ``ids`` / ``visitor_ids`` restrict to those conversations or
    visitors (what a text search found)."""

    states: tuple[str, ...] = ()
    assignee_id: str | None = None
    department: str | None = None
    tag: str | None = None
    since: float | None = None
    until: float | None = None
    ids: tuple[str, ...] | None = None
    visitor_ids: tuple[str, ...] | None = None

    def matches(self, c: Conversation) -> bool:
        """The reference semantics (the memory backend's; the others' must agree)."""
        return (
            (not self.states or c.state in self.states)
            and (self.assignee_id is None or (c.assignee_id or "") == self.assignee_id)
            and (self.department is None or c.department == self.department)
            and (self.tag is None or self.tag in c.tags)
            and (self.since is None or c.created_at >= self.since)
            and (self.until is None or c.created_at < self.until)
            and (self.ids is None or c.id in self.ids)
            and (self.visitor_ids is None or c.visitor_id in self.visitor_ids)
        )


def holds_terms(text: str, terms: list[str]) -> bool:
    """Whether ``text`` holds every term (see :func:`search_terms`)."""
    folded = text.casefold()
    return bool(terms) and all(t in folded for t in terms)


def contact_text(visitor: Visitor) -> str:
    """What a contact search looks in: name, e-mail and the attributes' values."""
    values = [visitor.name or "", visitor.email or ""]
    values += [str(v) for v in visitor.attributes.values()]
    return "\n".join(values)


def search_terms(query: str) -> list[str]:
    """The terms of a user's query: whitespace-separated, case-folded, at most 8.

    Every backend matches a message whose text contains **every** term as a
    substring, case-insensitively (CJK text has no spaces: "你好" finds "你好吗")."""
    return [t.casefold() for t in query.split() if t][:8]


@runtime_checkable
class Searchable(Protocol):
    """Optional capability of a backend: full-text search, conversation filters,
    the contact list, and deleting or redacting what a person asked to erase.

    Every built-in backend has it (``isinstance(storage, Searchable)``); a
    third-party backend without it gets no search in the console. Messages
    removed by :meth:`delete_visitor` or redacted by :meth:`redact_message`
    are gone from the index in the same write."""

    async def search_messages(
        self, site_id: str, query: str, *, limit: int = 20, before: float | None = None
    ) -> list[Message]:
        """Messages of the site whose text holds every term of ``query``
        (:func:`search_terms`), newest first, ``created_at < before`` when given.
        A query without terms finds nothing."""

    async def search_visitors(self, site_id: str, query: str, *, limit: int = 20) -> list[Visitor]:
        """Visitors whose name, e-mail or attribute values hold every term, newest
        ``last_seen_at`` first."""

    async def list_visitors(
        self, site_id: str, *, limit: int = 50, before: float | None = None
    ) -> list[Visitor]:
        """The contact list: newest ``last_seen_at`` first, paged by ``before``."""

    async def find_conversations(
        self,
        site_id: str,
        where: ConversationFilter,
        *,
        limit: int = 50,
        before: float | None = None,
    ) -> list[Conversation]:
        """Conversations matching ``where``, newest ``updated_at`` first (as
        ``list_conversations``)."""

    async def redact_message(
        self, site_id: str, conversation_id: str, seq: int, *, text: str, meta: dict[str, Any]
    ) -> bool:
        """Replace a message's text, attachment (removed) and meta, keeping its seq and
        cid (a tombstone); False when absent."""

    async def delete_visitor(self, site_id: str, visitor_id: str) -> int:
        """Erase a visitor, their conversations and messages (and their index
        entries) in one transaction; the number of messages removed, or -1 when
        the visitor did not exist."""


# -- file contents (an optional capability) ---------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class BlobInfo:
    """What is known of a stored file without reading its bytes."""

    site_id: str
    id: str
    size: int
    mime: str
    created_at: float
    #: Who uploaded it (``"visitor:<id>"``, ``"agent:<id>"``; "" when unknown): an erasure
    #: finds the uploads of a person that no message carries (:meth:`BlobStore.owned_blobs`).
    owner: str = ""


@runtime_checkable
class BlobStore(Protocol):
    """Optional capability of a backend: the bytes of files (uploads) kept in storage,
    so every process on a shared storage serves a file whichever process stored it.

    Every built-in backend has it (``isinstance(storage, BlobStore)``). Blobs are
    scoped by site like everything else and written once: an id is never reused
    for other bytes."""

    async def put_blob(
        self, site_id: str, blob_id: str, data: bytes, *, mime: str, owner: str = ""
    ) -> BlobInfo:
        """Store ``data`` durably under a new id, with who uploaded it (``owner``, kept
        in the same write as the bytes); :class:`DuplicateError` when the id is taken
        in that site (nothing is replaced)."""

    async def blob_info(self, site_id: str, blob_id: str) -> BlobInfo | None:
        """Size, type and time of a stored blob, without its bytes; None when absent."""

    async def get_blob(self, site_id: str, blob_id: str) -> tuple[BlobInfo, bytes] | None:
        """The blob and its bytes, or None."""

    async def read_blob(self, site_id: str, blob_id: str, offset: int, length: int) -> bytes | None:
        """At most ``length`` bytes from ``offset`` (0-based) without reading the rest: a
        download in pieces and HTTP ``Range`` requests. Fewer bytes at the end of the blob,
        ``b""`` from ``offset >= size``; None when absent."""

    async def delete_blob(self, site_id: str, blob_id: str) -> bool:
        """Delete the bytes for good (an erasure relies on it); False when absent."""

    async def owned_blobs(self, site_id: str, owner: str, *, limit: int = 100) -> list[str]:
        """Ids of at most ``limit`` blobs of the site stored with this ``owner`` (a non-empty
        one), in id order: an erasure deletes them, then asks again until none is left."""


class GroupCommit(Generic[T, R]):
    """Group commit for backend authors: concurrent writes share one durable commit.

    ``submit(item)`` queues the item and waits. One writer task takes what is
    queued (up to ``max_batch`` items) and calls ``flush(items)``, which must
    write them all in one transaction and return one result (or exception
    instance) per item, in order. Items that arrive while a flush runs form the
    next batch, so a batch closes when the previous commit finishes or when it
    holds ``max_batch`` items. ``window`` (seconds) gathers larger batches under
    load: once a batch has been committed and more items are already queued, the
    next batch waits ``window`` before it closes (unless it is full); an item that
    finds the writer idle is committed at once, so a quiet store adds no latency.
    Fewer, larger commits cost less per item (every commit rewrites the pages it
    touched and syncs). ``max_batch=1`` turns grouping off (one commit per item).
    If ``flush`` raises, every item of that batch gets the error.
    """

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch: int = 256,
        window: float = 0.0,
        name: str = "group-commit",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._flush = flush
        self.max_batch = max_batch
        self.window = window
        self.name = name
        self._pending: list[tuple[T, asyncio.Future, float]] = []
        self._wakeup = asyncio.Event()
        #: what the degradation sensors read (kefu.core.pressure): time queued, commit time
        self.sojourn = SojournMeter(f"storage.{name}")
        self.latency = BatchMeter(f"storage.{name}")
        self._writer: asyncio.Task | None = None
        self._closed = False
        self.batches = 0  # flushes so far (tests and benchmarks read these)
        self.items = 0

    async def submit(self, item: T) -> R:
        """Queue ``item``; return its result once its batch is committed."""
        if self._closed:
            raise StorageError("storage is closed")
        future = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        if not self._pending:
            self.sojourn.oldest = now
        self._pending.append((item, future, now))
        self._wakeup.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._run(), name=self.name)
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            busy = False  # a batch was committed in this round: items are arriving fast
            while self._pending:
                if busy and self.window and len(self._pending) < self.max_batch:
                    await asyncio.sleep(self.window)  # gather a larger batch under load
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                started = time.monotonic()
                self.sojourn.record(started - batch[0][2])  # its oldest item's wait
                self.sojourn.oldest = self._pending[0][2] if self._pending else 0.0
                self.sojourn.flight = batch[-1][2]
                try:
                    await self._commit(batch)
                finally:
                    self.sojourn.flight = 0.0
                ended = time.monotonic()
                self.latency.record(ended - started)
                self.sojourn.done(ended - batch[-1][2])  # what every item of it waited
                busy = True
            if self._closed:
                return

    async def _commit(self, batch: list[tuple[T, asyncio.Future, float]]) -> None:
        try:
            results: Sequence[R | BaseException] = await self._flush([item[0] for item in batch])
            if len(results) != len(batch):
                raise StorageError(f"{self.name}: flush returned {len(results)} results")
        except Exception as exc:
            log.warning("%s: a batch of %d failed: %s", self.name, len(batch), exc)
            results = [exc] * len(batch)
        self.batches += 1
        self.items += len(batch)
        for (_, future, _), result in zip(batch, results, strict=True):
            if future.done():  # the caller was cancelled; its item is stored anyway
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Refuse new items, commit the queued ones, stop the writer."""
        self._closed = True
        self._wakeup.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
