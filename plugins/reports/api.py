"""``GET /v1/reports`` and ``GET /v1/reports/{table}.csv``: read with ``reports.read``."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from kefu.core.errors import ApiError
from kefu.core.reports import FACTS_PAGE, ConversationFacts, Reportable
from kefu.core.types import RestEndpoint

from . import figures
from .models import TABLES, Report, ReportQuery

#: Longest range one report covers.
MAX_DAYS = 366
ACTION = "reports.read"


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(400, "invalid_time_zone", f"unknown time zone {name!r}") from None


def _range(query: ReportQuery, zone: ZoneInfo) -> tuple[dt.date, dt.date]:
    last = query.until or dt.datetime.now(zone).date()
    first = query.since or last - dt.timedelta(days=6)
    if first > last:
        raise ApiError(400, "invalid_range", "since must not be after until")
    if (last - first).days + 1 > MAX_DAYS:
        raise ApiError(400, "range_too_long", f"a report covers at most {MAX_DAYS} days")
    return first, last


def _start_of(day: dt.date, zone: ZoneInfo) -> float:
    return dt.datetime.combine(day, dt.time(), tzinfo=zone).timestamp()


async def collect(call: Any) -> tuple[list[ConversationFacts], bool, dict[str, Any]]:
    """The facts of the query's range (at most ``max_conversations``) and its frame."""
    await call.require(ACTION, call.site_id)
    storage = call.kernel.storage
    if not isinstance(storage, Reportable):
        raise ApiError(503, "not_supported", f"storage backend {storage.name!r} has no reports")
    zone = _zone(call.query.tz)
    first, last = _range(call.query, zone)
    since, until = _start_of(first, zone), _start_of(last + dt.timedelta(days=1), zone)
    most = call.kernel.config.section("reports").max_conversations
    facts: list[ConversationFacts] = []
    after = None
    while True:  # one more than the most, to know whether some were left out
        want = min(FACTS_PAGE, most + 1 - len(facts))
        page = await storage.conversation_facts(call.site_id, since, until, after=after, limit=want)
        facts += page
        if len(page) < want or len(facts) > most:
            break
        after = (page[-1].created_at, page[-1].conversation_id)
    frame = {"first": first, "last": last, "zone": zone}
    return facts[:most], len(facts) > most, frame


async def report_of(call: Any) -> tuple[dict[str, Any], list[ConversationFacts], ZoneInfo]:
    facts, truncated, frame = await collect(call)
    names = {a.id: a.name for a in await call.kernel.storage.list_agents(call.site_id)}
    # about 4.5 us per conversation (tests/bench/reports_bench.py): off the event loop, so a
    # large range does not hold up the chats for a few hundred ms
    built = await asyncio.to_thread(
        figures.build, facts, frame["first"], frame["last"], frame["zone"], names
    )
    head = {
        "since": frame["first"].isoformat(),
        "until": frame["last"].isoformat(),
        "tz": call.query.tz,
        "truncated": truncated,
    }
    return {**head, **built}, facts, frame["zone"]


async def get_report(call: Any) -> Report:
    report, _, _ = await report_of(call)
    return Report(**report)


def _cell(value: Any) -> Any:
    """A spreadsheet would run a text starting with = + - @ as a formula: quote it."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _time(value: float | None, zone: ZoneInfo) -> str | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value, zone).isoformat(timespec="seconds")


def conversation_rows(facts: list[ConversationFacts], zone: ZoneInfo) -> list[dict[str, Any]]:
    return [
        {
            "conversation_id": f.conversation_id,
            "created_at": _time(f.created_at, zone),
            "state": f.state,
            "agent_id": f.agent_id,
            "department": f.department,
            "first_agent_reply_at": _time(f.first_agent_reply_at, zone),
            "first_response_s": figures.first_response_s(f),
            "resolved_at": _time(f.resolved_at, zone),
            "resolution_s": figures.resolution_s(f),
            "rating": f.rating,
            "rating_scale": f.rating_scale,
            "bot_handled": f.bot_handled,
            "bot_contained": f.contained,
            "handoff_at": _time(f.handoff_at, zone),
            "visitor_messages": f.visitor_messages,
            "agent_messages": f.agent_messages,
            "bot_messages": f.bot_messages,
        }
        for f in facts
    ]


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    # the byte-order mark lets spreadsheet programs read UTF-8 (agents' Chinese names)
    return ("\ufeff" + out.getvalue()).encode("utf-8")


#: The columns of each CSV table: its key, then its figures.
COLUMNS = {
    "days": ["date", *figures.Tally().row()],
    "hours": ["hour", "conversations"],
    "agents": ["agent_id", "name", *figures.Tally().row()],
    "departments": ["department", *figures.Tally().row()],
    "conversations": list(conversation_rows([ConversationFacts("", 0.0, "")], ZoneInfo("UTC"))[0]),
}


async def get_csv(call: Any) -> web.Response:
    table = call.params["table"]
    report, facts, zone = await report_of(call)
    rows = conversation_rows(facts, zone) if table == "conversations" else report[table]
    name = f"kefu-{table}-{report['since']}-{report['until']}.csv"
    return web.Response(
        body=to_csv(rows, COLUMNS[table]),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


CSV_OPENAPI = {
    "responses": {
        "200": {
            "description": "The table as CSV (UTF-8 with a byte-order mark, a header row).",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    }
}


def endpoints() -> list[RestEndpoint]:
    tables = {"table": "^(" + "|".join(TABLES) + ")$"}
    described = (
        "Supervisors and admins (`reports.read`). Figures of the conversations created "
        "from `since` to `until` (days in `tz`): volume per day and hour, first-response "
        "and resolution time (median, p90), CSAT, bot containment, per agent and per "
        "department. See docs/ui.md, Reports."
    )
    return [
        RestEndpoint("GET", "/v1/reports", "get_report", "Conversation reports", "reports",
                     get_report, response=Report, query=ReportQuery, errors=(503,),
                     description=described),
        RestEndpoint("GET", "/v1/reports/{table}.csv", "get_report_csv",
                     "A report table as CSV", "reports", get_csv, query=ReportQuery,
                     errors=(503,), path_patterns=tables, openapi=CSV_OPENAPI,
                     description="One of `days`, `hours`, `agents`, `departments` (the "
                     "rows of `GET /v1/reports`) or `conversations` (one row per conversation)."),
    ]  # fmt: skip
