"""Report facts on SQL (``core.reports.Reportable``): one grouped query per page.

The conversations of a site created in a range are read by the
``conversations_site_created_id`` index, each joined with its messages (by the
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
        cid = "id" if self.is_sqlite else 'id COLLATE "C"'
        clauses = ["site_id = ?", "created_at >= ?", "created_at < ?"]
        # the next page's range starts where the last one ended (a tight bound for the index)
        params: list[Any] = [site_id, since if after is None else max(since, after[0]), until]
        if after is not None:
            clauses.append(f"(created_at > ? OR (created_at = ? AND {cid} > ?))")
            params += [after[0], after[0], after[1]]
        params.append(max(min(limit, FACTS_PAGE), 0))
        # the page of conversations first (walking the (site_id, created_at, id) index), then
        # only their messages: grouping the whole join would read every conversation of the
        # site for each page (measured: tests/bench/reports_bench.py)
        page = (
            "SELECT site_id, id, created_at, state, assignee_id, department, resolved_at, meta "
            f"FROM {sql.table(conversations)} WHERE {' AND '.join(clauses)} "
            f"ORDER BY created_at, {cid} LIMIT ?"
        )
        stmt = (
            "SELECT c.id, c.created_at, c.state, c.assignee_id, c.department, c.resolved_at, "
            "c.meta, MIN(CASE WHEN m.sender_kind = 'agent' THEN m.created_at END), "
            f"{_count('visitor')}, {_count('agent')}, {_count('bot')} "
            f"FROM ({page}) AS c LEFT JOIN {sql.table(messages)} AS m "
            "ON m.site_id = c.site_id AND m.conversation_id = c.id AND m.type <> 'event' "
            "GROUP BY c.site_id, c.id, c.created_at, c.state, c.assignee_id, c.department, "
            f"c.resolved_at, c.meta ORDER BY c.created_at, c.{cid}"
        )
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
