"""From conversation facts (``kefu.core.reports``) to the figures of a report.

Pure functions, no I/O. Every figure is of the conversations **created** in the
range (a cohort): "resolved" on a day means created that day and resolved since.

- first response: ``first_agent_reply_at - answered_from`` (from the bot's handoff when
  a bot handed over, else from the creation), for conversations an agent answered;
- resolution: ``resolved_at - created_at`` of the resolved ones;
- percentiles interpolate linearly between the closest ranks (``statistics.quantiles``,
  method ``inclusive``: the median of 10 s and 20 s is 15 s);
- CSAT: ``satisfied_pct`` is the share of ratings in the top two of the scale (4 and 5
  of 5), ``average`` the mean score;
- bot containment: ``contained / handled`` of the conversations a bot handled.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from kefu.core.domain import RESOLVED
from kefu.core.reports import ConversationFacts


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0 < q < 1) of ``values``, None without any."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return float(cuts[round(q * 100) - 1])


def first_response_s(f: ConversationFacts) -> float | None:
    if f.first_agent_reply_at is None:
        return None
    return max(f.first_agent_reply_at - f.answered_from, 0.0)


def resolution_s(f: ConversationFacts) -> float | None:
    if f.state != RESOLVED or f.resolved_at is None:
        return None
    return max(f.resolved_at - f.created_at, 0.0)


def satisfied(f: ConversationFacts) -> bool:
    scale = f.rating_scale or 5
    return f.rating is not None and f.rating >= scale - 1


@dataclass(slots=True)
class Tally:
    """The figures of one group of conversations (a day, an agent, the whole range)."""

    conversations: int = 0
    resolved: int = 0
    first_responses: list[float] = field(default_factory=list)
    resolutions: list[float] = field(default_factory=list)
    ratings: list[int] = field(default_factory=list)
    satisfied: int = 0
    bot_handled: int = 0
    contained: int = 0
    handed_off: int = 0

    def add(self, f: ConversationFacts) -> None:
        self.conversations += 1
        if (first := first_response_s(f)) is not None:
            self.first_responses.append(first)
        if (resolution := resolution_s(f)) is not None:
            self.resolved += 1
            self.resolutions.append(resolution)
        if f.rating is not None:
            self.ratings.append(f.rating)
            self.satisfied += satisfied(f)
        if f.bot_handled:
            self.bot_handled += 1
            self.contained += f.contained
            self.handed_off += f.handoff_at is not None

    def row(self) -> dict[str, Any]:
        """The flat figures (one CSV row, one table row on the page)."""
        return {
            "conversations": self.conversations,
            "resolved": self.resolved,
            "first_response_median_s": _round(quantile(self.first_responses, 0.5)),
            "first_response_p90_s": _round(quantile(self.first_responses, 0.9)),
            "resolution_median_s": _round(quantile(self.resolutions, 0.5)),
            "resolution_p90_s": _round(quantile(self.resolutions, 0.9)),
            "ratings": len(self.ratings),
            "csat_pct": _pct(self.satisfied, len(self.ratings)),
            "bot_handled": self.bot_handled,
            "bot_contained": self.contained,
            "containment_pct": _pct(self.contained, self.bot_handled),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "conversations": self.conversations,
            "resolved": self.resolved,
            "first_response": _spread(self.first_responses),
            "resolution": _spread(self.resolutions),
            "csat": {
                "ratings": len(self.ratings),
                "average": _round(statistics.fmean(self.ratings) if self.ratings else None, 2),
                "satisfied_pct": _pct(self.satisfied, len(self.ratings)),
            },
            "bot": {
                "handled": self.bot_handled,
                "contained": self.contained,
                "handed_off": self.handed_off,
                "containment_pct": _pct(self.contained, self.bot_handled),
            },
        }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "median_s": _round(quantile(values, 0.5)),
        "p90_s": _round(quantile(values, 0.9)),
        "average_s": _round(statistics.fmean(values) if values else None),
    }


def days_of(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def build(
    facts: Iterable[ConversationFacts],
    first: dt.date,
    last: dt.date,
    zone: ZoneInfo,
    agent_names: dict[str, str],
) -> dict[str, Any]:
    """The report of the days ``first``..``last`` (both included) in ``zone``."""
    total = Tally()
    days = {day: Tally() for day in days_of(first, last)}
    hours = [0] * 24
    agents: dict[str, Tally] = defaultdict(Tally)
    departments: dict[str, Tally] = defaultdict(Tally)
    for f in facts:
        local = dt.datetime.fromtimestamp(f.created_at, zone)
        total.add(f)
        if (day := days.get(local.date())) is not None:
            day.add(f)
        hours[local.hour] += 1
        if f.agent_id is not None:
            agents[f.agent_id].add(f)
        departments[f.department or ""].add(f)
    return {
        "summary": total.summary(),
        "days": [{"date": d.isoformat(), **t.row()} for d, t in days.items()],
        "hours": [{"hour": h, "conversations": n} for h, n in enumerate(hours)],
        "agents": sorted(
            ({"agent_id": a, "name": agent_names.get(a, a), **t.row()} for a, t in agents.items()),
            key=lambda r: (-r["conversations"], r["name"]),
        ),
        "departments": sorted(
            ({"department": d, **t.row()} for d, t in departments.items()),
            key=lambda r: (-r["conversations"], r["department"]),
        ),
    }
