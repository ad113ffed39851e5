"""Report facts on SQL (``core.reports.Reportable``): one grouped query per page.

The conversations of a site created in a range are read by the
``conversations_site_created`` index, each joined with its messages (by the
messages' primary key) and grouped: message counts per sender and the first
agent message, computed by the database. The rating and the handoff come out of
``meta`` in Python (:func:`kefu.core.reports.meta_facts`), so SQLite and
PostgreSQL need no JSON functions of their own.
"""

from __future__ import annotations

from typing import Any

import orjson

from kefu.core.reports import FACTS_PAGE, ConversationFacts, meta_facts

from .tables import conversations, messages


def _count(kind: str) -> str:
    return f"SUM(CASE WHEN m.sender_kind = '{kind}' THEN 1 ELSE 0 END)"


class SqlReports:
    """The Reportable method of :class:`~kefu.plugins.storage_sql.SqlStorage` (a mixin)."""

    is_sqlite: bool

    def _ready(self) -> tuple[Any, Any]:  # pragma: no cover - SqlStorage's
        raise NotImplementedError

    async def conversation_facts(
        self,
        site_id: str,
        since: float,
        until: float,
        *,
        after: tuple[float, str] | None = None,
        limit: int = 1000,
    ) -> list[ConversationFacts]:
        db, sql = self._ready()
        # ids compare in code-point order on both databases (as the other backends do)
        cid = "c.id" if self.is_sqlite else 'c.id COLLATE "C"'
        clauses = ["c.site_id = ?", "c.created_at >= ?", "c.created_at < ?"]
        params: list[Any] = [site_id, since, until]
        if after is not None:
            clauses.append(f"(c.created_at > ? OR (c.created_at = ? AND {cid} > ?))")
            params += [after[0], after[0], after[1]]
        stmt = (
            "SELECT c.id, c.created_at, c.state, c.assignee_id, c.department, c.resolved_at, "
            "c.meta, MIN(CASE WHEN m.sender_kind = 'agent' THEN m.created_at END), "
            f"{_count('visitor')}, {_count('agent')}, {_count('bot')} "
            f"FROM {sql.table(conversations)} AS c LEFT JOIN {sql.table(messages)} AS m "
            "ON m.site_id = c.site_id AND m.conversation_id = c.id AND m.type <> 'event' "
            f"WHERE {' AND '.join(clauses)} "
            "GROUP BY c.site_id, c.id, c.created_at, c.state, c.assignee_id, c.department, "
            f"c.resolved_at, c.meta ORDER BY c.created_at, {cid} LIMIT ?"
        )
        params.append(max(min(limit, FACTS_PAGE), 0))
        rows = await db.fetch_all(sql.text(stmt), params, "reports")
        return [
            ConversationFacts(
                conversation_id=row[0],
                created_at=row[1],
                state=row[2],
                agent_id=row[3],
                department=row[4],
                resolved_at=row[5],
                first_agent_reply_at=row[7],
                visitor_messages=int(row[8] or 0),
                agent_messages=int(row[9] or 0),
                bot_messages=int(row[10] or 0),
                **meta_facts(orjson.loads(row[6])),
            )
            for row in rows
        ]
