"""Agent sessions and account states as storage records: what makes tokens revocable.

Every agent login creates a session record (kind ``auth.session``, id
``<agent id>.<random>``, in the agent's site) and the token names it; a token
whose session record is gone or expired is refused on every use
(:func:`kefu.plugins.auth.kefu_auth_authenticate`). So:

- logging out deletes one session; "sign out everywhere", a password change,
  disabling and deleting an agent delete all of the agent's sessions;
- the change is announced on the bus (:mod:`kefu.core.identity`): every worker
  re-checks its open connections of that agent at once.

The account state (kind ``auth.account``, id = agent id) says whether the agent
is disabled or deleted; login refuses both. A deleted agent's record stays
(messages and history name it) but is scrubbed: e-mail freed, password unusable.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from kefu.core.storage import VersionConflict

SESSION_KIND = "auth.session"
ACCOUNT_KIND = "auth.account"
#: Sessions one agent may hold; past it the oldest ones are ended at login.
MAX_SESSIONS_PER_AGENT = 50
_PAGE = 100


def session_id(agent_id: str) -> str:
    # agent ids never hold a ".", so the agent's sessions share the prefix "<agent id>."
    return f"{agent_id}.{secrets.token_urlsafe(12)}"


def agent_of(session: str) -> str:
    return session.partition(".")[0]


class Sessions:
    """Session and account records of one kernel's storage."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    # -- sessions ---------------------------------------------------------------
    async def create(
        self, site_id: str, agent_id: str, expires_at: float, remote: str | None = None
    ) -> str:
        """A new session; the agent's expired ones (and the oldest past the cap) are ended."""
        await self._prune(site_id, agent_id)
        sid = session_id(agent_id)
        data = {"expires_at": expires_at, "created_at": time.time(), "remote": remote}
        await self.storage.put_record(site_id, SESSION_KIND, sid, data, expect_version=0)
        return sid

    async def valid(self, site_id: str, agent_id: str, sid: str | None) -> bool:
        """The session exists, belongs to this agent and has not expired."""
        if not sid or agent_of(sid) != agent_id:
            return False
        record = await self.storage.get_record(site_id, SESSION_KIND, sid)
        if record is None:
            return False
        expires_at = record.data.get("expires_at")
        return isinstance(expires_at, (int, float)) and expires_at > time.time()

    async def list(self, site_id: str, agent_id: str) -> list[Any]:
        found, after = [], ""
        while True:
            page = await self.storage.list_records(
                site_id, SESSION_KIND, prefix=f"{agent_id}.", after=after, limit=_PAGE
            )
            found.extend(page)
            if len(page) < _PAGE:
                return found
            after = page[-1].id

    async def end(self, site_id: str, sid: str) -> bool:
        return await self.storage.delete_record(site_id, SESSION_KIND, sid)

    async def end_all(self, site_id: str, agent_id: str) -> int:
        """End every session of the agent; how many there were."""
        ended = 0
        for record in await self.list(site_id, agent_id):
            ended += await self.end(site_id, record.id)
        return ended

    async def _prune(self, site_id: str, agent_id: str) -> None:
        now = time.time()
        live = []
        for record in await self.list(site_id, agent_id):
            expires_at = record.data.get("expires_at")
            if not isinstance(expires_at, (int, float)) or expires_at <= now:
                await self.end(site_id, record.id)
            else:
                live.append(record)
        live.sort(key=lambda r: r.data.get("created_at") or 0)
        for record in live[: max(0, len(live) - MAX_SESSIONS_PER_AGENT + 1)]:
            await self.end(site_id, record.id)

    # -- account states ---------------------------------------------------------
    async def account(self, site_id: str, agent_id: str) -> dict[str, Any]:
        record = await self.storage.get_record(site_id, ACCOUNT_KIND, agent_id)
        return dict(record.data) if record is not None else {}

    async def set_account(self, site_id: str, agent_id: str, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the agent's account state (retried on a concurrent write)."""
        for _ in range(5):
            record = await self.storage.get_record(site_id, ACCOUNT_KIND, agent_id)
            data = {**(record.data if record else {}), **changes, "updated_at": time.time()}
            try:
                await self.storage.put_record(
                    site_id, ACCOUNT_KIND, agent_id, data,
                    expect_version=record.version if record else 0,
                )  # fmt: skip
                return data
            except VersionConflict:
                continue
        raise VersionConflict(f"account {agent_id} keeps changing")

    async def accounts(self, site_id: str) -> dict[str, dict[str, Any]]:
        """Every account state of the site, by agent id (agents never changed are absent)."""
        found, after = {}, ""
        while True:
            page = await self.storage.list_records(site_id, ACCOUNT_KIND, after=after, limit=_PAGE)
            found.update({r.id: dict(r.data) for r in page})
            if len(page) < _PAGE:
                return found
            after = page[-1].id
