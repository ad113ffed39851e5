"""A server under test with its identities: kefu (real tokens, SQLite) or the baseline relay.

kefu's identities come through its public API, as a widget and a console would get them:
the demo admin (``kefu run`` prints its password once) creates the agents with
``POST /v1/agents``, each agent logs in with ``POST /v1/auth/login``, and every visitor
gets a token from ``POST /v1/visitors/session``. The relay takes ``kind:id`` as a token.
After a run, :meth:`Target.check` compares what the clients were acknowledged and received
with the ``messages`` table itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from kefu.plugins.auth.tokens import issue
from tests.bench.servers import ServerProcess
from tests.bench.worker import bounded

AGENT_PASSWORD = "bench-password-1"
SITE = "demo"


class Target:
    """``kefu`` or ``relay``: start it, hand out tokens, check deliveries against storage.

    ``server`` holds the :class:`ServerProcess` options (``settings``, ``backlog``,
    ``workers``, ``storage``, ...).
    """

    def __init__(self, kind: str, workdir: Path, **server: Any) -> None:
        self.kind = kind
        self.server = ServerProcess(kind, workdir, **server)
        self.admin_token: str | None = None
        self.widget_key: str | None = None
        self._serial = 0

    @property
    def base(self) -> str:
        return self.server.base

    async def start(self, http: aiohttp.ClientSession) -> None:
        await self.server.start()
        if self.kind != "kefu":
            return
        # a supervisor prints them with its banner once every worker is ready
        deadline = time.monotonic() + 10 + 10 * self.server.workers
        found: dict[str, str] = {}
        while time.monotonic() < deadline:
            found = self.server.announcements()
            if len(found) == 2:
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"kefu printed no demo credentials: {found}")
        self.widget_key = found["widget_key"]
        login = {"site_id": SITE, "email": "admin@example.com", "password": found["password"]}
        self.admin_token = (await _post(http, f"{self.base}/v1/auth/login", login))["token"]

    def _next(self) -> int:
        self._serial += 1
        return self._serial

    @property
    def drain_s(self) -> float:
        """How long to wait for stragglers: the relay never replays, so waiting is pointless."""
        return 600.0 if self.kind == "kefu" else 3.0

    async def visitors(
        self, http: aiohttp.ClientSession, count: int, signed: bool = False
    ) -> list[tuple[str, str]]:
        """``(visitor id, token)`` for ``count`` new visitors.

        ``signed``: sign the tokens here with the install's secret, as
        ``/v1/visitors/session`` would (no visitor record is written; connections only
        need the token). Otherwise each visitor gets its session from the API.
        """
        if self.kind != "kefu":
            return [(f"v{n}", f"visitor:v{n}") for n in (self._next() for _ in range(count))]
        if signed:
            secret = self.server.secret.encode()
            made = []
            for n in (self._next() for _ in range(count)):
                ident = f"bench-v{n}"
                made.append(
                    (
                        ident,
                        issue(secret, kind="visitor", site_id=SITE, subject=ident, ttl=86400)[0],
                    )
                )
            return made

        async def one(n: int) -> tuple[str, str]:
            body = {"widget_key": self.widget_key, "name": f"bench visitor {n}"}
            reply = await _post(http, f"{self.base}/v1/visitors/session", body)
            return reply["visitor_id"], reply["token"]

        made = await bounded([self._next() for _ in range(count)], one, 32)
        _raise_first(made)
        return made

    async def agents(
        self, http: aiohttp.ClientSession, count: int, skills: list[str] | None = None
    ) -> list[tuple[str, str]]:
        """``(agent id, token)`` for ``count`` new agents, created by the admin and logged in
        (with ``skills``: members of those departments, for routing)."""
        if self.kind != "kefu":
            return [(f"a{n}", f"agent:a{n}") for n in (self._next() for _ in range(count))]
        admin = {"Authorization": f"Bearer {self.admin_token}"}

        async def one(n: int) -> tuple[str, str]:
            email = f"agent{n}@bench.example"
            body = {"email": email, "name": f"Agent {n}", "password": AGENT_PASSWORD}
            body["capacity"] = 100
            if skills:
                body["skills"] = skills
            await _post(http, f"{self.base}/v1/agents", body, headers=admin)
            login = {"site_id": SITE, "email": email, "password": AGENT_PASSWORD}
            reply = await _post(http, f"{self.base}/v1/auth/login", login)
            return reply["agent"]["id"], reply["token"]

        made = await bounded([self._next() for _ in range(count)], one, 8)
        _raise_first(made)
        return made

    async def check(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Losses of one population: client records against storage (kefu) or each other."""
        conversations: dict[str, dict] = {}
        unacked = behind = away = 0
        for part in records:
            unacked += part["unacked"]
            behind += part["behind"]
            away += part["disconnected"]
            for conversation_id, entry in part["conversations"].items():
                merged = conversations.setdefault(conversation_id, {"acked": {}, "last": {}})
                merged["acked"].update(entry["acked"])
                merged["last"].update(entry["last"])
        result: dict[str, Any] = {
            "conversations": len(conversations),
            "acked": sum(len(c["acked"]) for c in conversations.values()),
            "unacked_at_end": unacked,
            "behind_at_end": behind,
            "disconnected_at_end": away,
            # a drain that did not finish leaves messages "not yet delivered": not proof of loss
            "complete": not unacked and not away,
        }
        if self.kind != "kefu":
            result["lost"] = behind  # no storage: what a side never received is lost
            result["duplicated_stored"] = None
            result["summary"] = f"{behind} / n/a (no storage)"
            return result
        if self.server.pg_schema:
            stored, duplicated = await self._stored_pg(set(conversations))
        else:
            stored, duplicated = self._stored(set(conversations))
        acked_lost = gaps = undelivered = unacknowledged = 0
        for conversation_id, entry in conversations.items():
            rows = stored.get(conversation_id, {})
            acked_lost += sum(1 for cid, seq in entry["acked"].items() if rows.get(seq) != cid)
            top = max(rows, default=0)
            gaps += top - len(rows)
            undelivered += sum(max(0, top - last) for last in entry["last"].values())
            unacknowledged += sum(1 for cid in rows.values() if cid not in entry["acked"])
        result.update(
            stored=sum(len(rows) for rows in stored.values()),
            acked_not_stored=acked_lost,
            seq_gaps=gaps,
            undelivered=undelivered,
            stored_never_acked=unacknowledged,
            duplicated_stored=duplicated,
        )
        result["lost"] = acked_lost + (undelivered if result["complete"] else 0)
        result["summary"] = f"{result['lost']} / {duplicated}"
        if not result["complete"]:
            result["summary"] += f" ({undelivered} not yet delivered, {unacked} unacked at the end)"
        return result

    async def conversations(self) -> dict[str, tuple[str, str | None, float | None]]:
        """``{conversation: (state, assignee, meta assigned_at)}`` of the bench site, read
        from storage."""
        if self.server.pg_schema:
            import asyncpg

            db = await asyncpg.connect(self.server.pg_url)
            try:
                rows = await db.fetch(
                    f'SELECT id, state, assignee_id, meta FROM "{self.server.pg_schema}"'
                    ".conversations WHERE site_id = $1",
                    SITE,
                )
            finally:
                await db.close()
            found = [(r["id"], r["state"], r["assignee_id"], r["meta"]) for r in rows]
        else:
            db = sqlite3.connect(f"file:{self.server.db}?mode=ro", uri=True, timeout=30)
            try:
                found = db.execute(
                    "SELECT id, state, assignee_id, meta FROM conversations WHERE site_id = ?",
                    (SITE,),
                ).fetchall()
            finally:
                db.close()
        return {
            conversation_id: (state, assignee, (orjson.loads(meta) or {}).get("assigned_at"))
            for conversation_id, state, assignee, meta in found
        }

    def _stored(self, conversation_ids: set[str]) -> tuple[dict[str, dict[int, str]], int]:
        """``{conversation: {seq: cid}}`` from the SQLite file (read-only), and duplicate cids."""
        db = sqlite3.connect(f"file:{self.server.db}?mode=ro", uri=True, timeout=30)
        try:
            stored: dict[str, dict[int, str]] = {}
            for conversation_id, seq, cid in db.execute(
                "SELECT conversation_id, seq, cid FROM messages"
            ):
                if conversation_id in conversation_ids:
                    stored.setdefault(conversation_id, {})[seq] = cid
            (duplicated,) = db.execute(
                "SELECT COUNT(*) FROM (SELECT 1 FROM messages GROUP BY site_id, "
                "conversation_id, cid HAVING COUNT(*) > 1)"
            ).fetchone()
        finally:
            db.close()
        return stored, duplicated

    async def _stored_pg(self, conversation_ids: set[str]) -> tuple[dict, int]:
        """:meth:`_stored` from the run's PostgreSQL schema."""
        import asyncpg

        db = await asyncpg.connect(self.server.pg_url)
        table = f'"{self.server.pg_schema}".messages'
        try:
            stored: dict[str, dict[int, str]] = {}
            for conversation_id, seq, cid in await db.fetch(
                f"SELECT conversation_id, seq, cid FROM {table}"
            ):
                if conversation_id in conversation_ids:
                    stored.setdefault(conversation_id, {})[seq] = cid
            duplicated = await db.fetchval(
                f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} GROUP BY site_id, "
                "conversation_id, cid HAVING COUNT(*) > 1) AS twice"
            )
        finally:
            await db.close()
        return stored, duplicated


async def _post(
    http: aiohttp.ClientSession, url: str, body: dict, headers: dict | None = None
) -> dict[str, Any]:
    async with http.post(url, json=body, headers=headers) as resp:
        if resp.status not in (200, 201):
            raise RuntimeError(f"POST {url} answered {resp.status}: {await resp.text()}")
        return await resp.json()


def _raise_first(results: list[Any]) -> None:
    for r in results:
        if isinstance(r, Exception):
            raise r
