"""Read-modify-write of conversation and site records.

Notes, tags, ratings and offline messages live in ``Conversation.meta`` /
``Conversation.tags``; welcome messages and canned replies in ``Site.settings``.
Storage writes a whole record, so a conversation edit is a compare-and-set on the
version it read (``update_conversation(if_version=...)``, atomic across processes):
an edit made meanwhile by anyone, in any worker (another note, an assignment), makes
it read again and re-apply instead of being overwritten. Edits of one record in this
process also queue behind a lock, which saves them the retry. Site settings have no
version yet: two workers editing one site's settings at once can still lose an edit.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from kefu.core.domain import Conversation, Site
from kefu.core.errors import ApiError

ATTEMPTS = 5


class Edits:
    """Per-record locks of one kernel."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        # a lock lives while someone holds or waits for it, then its entry goes away
        self._locks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def _locked(self, key: Any) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def conversation(
        self, site_id: str, conversation_id: str, change: Callable[[Conversation], Any]
    ) -> tuple[Conversation, Any]:
        """Apply ``change`` (which may raise :class:`ApiError`) to a fresh copy and store it;
        returns the stored record and what ``change`` returned."""
        storage = self.kernel.storage
        async with self._locked(("c", site_id, conversation_id)):
            for _ in range(ATTEMPTS):
                found = await storage.get_conversation(site_id, conversation_id)
                if found is None:
                    raise ApiError(404, "conversation_not_found", "no such conversation")
                version = found.version
                result = change(found)
                if await storage.update_conversation(found, if_version=version):
                    found.version = version + 1
                    return found, result
        raise ApiError(409, "conflict", "the conversation keeps changing; try again")

    async def site(self, site_id: str, change: Callable[[dict], Any]) -> tuple[Site, Any]:
        """Apply ``change`` to a copy of the site's settings and store the site."""
        storage = self.kernel.storage
        async with self._locked(("s", site_id)):
            site = await storage.get_site(site_id)
            if site is None:
                raise ApiError(404, "not_found", "site not found")
            settings = dict(site.settings)
            result = change(settings)
            site.settings = settings
            await storage.update_site(site)
            return site, result
