"""A/B tests at run time: the context of a turn, exposures, conversions, reports.

- **Context.** Before a turn of a flow that has dynamic replies, :meth:`AbTests.context`
  reads the visitor's attributes and builds the :class:`~.strategy.StrategyContext`
  (segments, active campaigns, the clock, assignments already made).
- **Exposure.** When a turn said an experiment's variant, the conversation's
  ``meta["bot_ab"][experiment] = {variant, exposed_at, converted_at: None, weights,
  allocation, convert_on, flow_id, version}`` is written with the bot's session (one
  ``update_conversation``), the first exposure only, then ``bot.exposure``
  {conversation_id, visitor_id, experiment, variant, flow_id, version} is emitted.
- **Conversion.** ``converted_at`` is set once, compare-and-set on the conversation's
  state, within ``[bot] conversion_window_s`` of the exposure, on the experiment's
  ``convert_on``: a ``track`` frame (``kefu.track(name)`` in the widget), a domain event
  naming the conversation, the dialogue entering a state, or ``conversation.resolved``
  without a bot handoff; then ``bot.conversion`` {conversation_id, visitor_id,
  experiment, variant, via} is emitted.
- **Report.** :meth:`AbTests.report` reads every conversation of a site (newest first,
  pages of 500) and hands the records to :func:`~.experiments.build_report`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from collections.abc import Callable
from typing import Any

from kefu.core.domain import Conversation
from kefu.core.errors import ApiError
from kefu.plugins.bot_intents.experiments import build_report, thompson_draw
from kefu.plugins.bot_intents.strategy import Strategy, StrategyContext

log = logging.getLogger(__name__)

AB_KEY = "bot_ab"
TRACK_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_PROPS_BYTES = 2048
PAGE = 500
MAX_SCAN = 1_000_000  # conversations read by one report, at most
_RECENT = 20  # a visitor's conversations looked at by track and thompson stickiness


def _records(conversation: Conversation) -> dict[str, dict]:
    found = conversation.meta.get(AB_KEY)
    return found if isinstance(found, dict) else {}


def _has_cases(flow: Any) -> bool:
    """Does any reply of the flow have ``when:`` variants or experiments?"""
    from kefu.plugins.bot_intents.validate import _responses

    return any(response.cases for _state, response in _responses(flow.spec))


class AbTests:
    """Dynamic replies and A/B tests of one bot service."""

    def __init__(self, service: Any, settings: Any) -> None:
        self.service = service
        self.kernel = service.kernel
        self.strategy = Strategy.from_settings(settings)
        self.window_s = float(settings.conversion_window_s)
        self.track_rate = settings.track_per_minute / 60.0
        self.track_burst = float(settings.track_per_minute)
        self.rng = random.Random()
        self._dynamic: dict[str, bool] = {}  # flow sha -> has cases
        self._tallies: dict[tuple[str, str], dict[str, list[int]]] = {}  # (site, exp) -> n, x
        self._tallied_sites: set[str] = set()
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # track rate limit
        self._event_types: tuple[int, frozenset[str]] = (-1, frozenset())
        self.counts = {"exposures": 0, "conversions": 0, "tracks": 0}

    # -- the context of a turn ------------------------------------------------------------
    def dynamic(self, flow: Any) -> bool:
        found = self._dynamic.get(flow.sha256)
        if found is None:
            found = self._dynamic[flow.sha256] = _has_cases(flow)
        return found

    async def context(self, conversation: Conversation, flow: Any) -> StrategyContext | None:
        """The turn's context, or None for a flow without dynamic replies (no storage read)."""
        if not self.dynamic(flow):
            return None
        storage = self.kernel.storage
        visitor = await storage.get_visitor(conversation.site_id, conversation.visitor_id)
        assignments = {k: str(r.get("variant")) for k, r in _records(conversation).items()}
        thompson = [
            e for e in flow.spec.experiments.values()
            if e.allocation == "thompson" and e.id not in assignments
        ]  # fmt: skip
        if thompson:  # sticky once assigned: an earlier conversation of the visitor decides
            await self._tally(conversation.site_id)
            earlier = await storage.list_conversations(
                conversation.site_id, visitor_id=conversation.visitor_id, limit=_RECENT
            )
            for other in earlier:
                for exp_id, record in _records(other).items():
                    assignments.setdefault(exp_id, str(record.get("variant")))
        site_id = conversation.site_id
        return self.strategy.context(
            site_id,
            conversation.visitor_id,
            visitor.attributes if visitor is not None else {},
            assignments=assignments,
            sampler=lambda experiment: self._sample(site_id, experiment),
        )

    def _sample(self, site_id: str, experiment: Any) -> str:
        tallies = self._tallies.get((site_id, experiment.id), {})
        counts = {name: (n, x) for name, (n, x) in tallies.items()}
        return thompson_draw(experiment.names, counts, self.rng)

    async def _tally(self, site_id: str) -> None:
        """Exposures and conversions per variant, read once per site (Thompson sampling)."""
        if site_id in self._tallied_sites:
            return
        self._tallied_sites.add(site_id)
        async for conversation in self._conversations(site_id):
            for exp_id, record in _records(conversation).items():
                self._count(site_id, exp_id, record, exposed=True)

    def _count(self, site_id: str, exp_id: str, record: dict, *, exposed: bool) -> None:
        entry = self._tallies.setdefault((site_id, exp_id), {})
        n_x = entry.setdefault(str(record.get("variant")), [0, 0])
        if exposed:
            n_x[0] += 1
        if record.get("converted_at"):
            n_x[1] += 1

    # -- exposures (written with the session) ---------------------------------------------
    def note_turn(self, conversation: Conversation, turn: Any, flow: Any) -> list[dict]:
        """Put the turn's first exposures and its state conversions in ``conversation.meta``
        (the caller saves it); returns the events to emit once it is saved."""
        if not turn.exposures and not turn.entered:
            return []
        now = time.time()
        records = dict(_records(conversation))
        events: list[dict] = []
        if turn.entered and records:  # conversions by entering a state (earlier exposures)
            for state in turn.entered:
                events += self._convert(conversation, records, f"state:{state}", now, "state")
        for experiment, variant in turn.exposures:
            if experiment.id in records:
                continue  # the first exposure is the one that counts (sticky)
            record = {
                "variant": variant,
                "exposed_at": now,
                "converted_at": None,
                "weights": experiment.weights(),
                "allocation": experiment.allocation,
                "convert_on": experiment.convert_on,
                "flow_id": flow.id,
                "version": flow.sha256,
            }
            records[experiment.id] = record
            self._count(conversation.site_id, experiment.id, record, exposed=True)
            self.counts["exposures"] += 1
            events.append(
                {
                    "type": "bot.exposure",
                    "conversation_id": conversation.id,
                    "visitor_id": conversation.visitor_id,
                    "experiment": experiment.id,
                    "variant": variant,
                    "flow_id": flow.id,
                    "version": flow.sha256,
                }
            )
        if events:
            conversation.meta = {**conversation.meta, AB_KEY: records}
        return events

    async def announce(self, site_id: str, events: list[dict]) -> None:
        for event in events:
            data = dict(event)
            await self.kernel.emit(data.pop("type"), site_id, **data)

    # -- conversions ----------------------------------------------------------------------
    def _convert(
        self, conversation: Conversation, records: dict, match: str, now: float, via: str
    ) -> list[dict]:
        """Mark matching, unconverted, recent exposures of ``records`` converted."""
        events = []
        for exp_id, record in list(records.items()):
            if record.get("convert_on") != match or record.get("converted_at"):
                continue
            if now - float(record.get("exposed_at") or 0) > self.window_s:
                continue
            records[exp_id] = {**record, "converted_at": now, "converted_via": via}
            entry = self._tallies.setdefault((conversation.site_id, exp_id), {})
            entry.setdefault(str(record.get("variant")), [0, 0])[1] += 1
            self.counts["conversions"] += 1
            events.append(
                {
                    "type": "bot.conversion",
                    "conversation_id": conversation.id,
                    "visitor_id": conversation.visitor_id,
                    "experiment": exp_id,
                    "variant": record.get("variant"),
                    "via": via,
                }
            )
        return events

    async def convert(
        self,
        site_id: str,
        conversation_id: str,
        match: str,
        via: str,
        *,
        only_if: Callable[[Conversation], bool] | None = None,
    ) -> list[str]:
        """Convert a stored conversation's exposures that wait for ``match``; returns the
        experiments converted. Under the bot's lock, compare-and-set on the state."""
        storage = self.kernel.storage
        async with self.service.lock(conversation_id):
            for _attempt in range(3):
                fresh = await storage.get_conversation(site_id, conversation_id)
                if fresh is None or not _records(fresh):
                    return []
                if only_if is not None and not only_if(fresh):
                    return []
                records = dict(_records(fresh))
                events = self._convert(fresh, records, match, time.time(), via)
                if not events:
                    return []
                fresh.meta = {**fresh.meta, AB_KEY: records}
                if await storage.update_conversation(fresh, if_state=fresh.state):
                    break
                for event in events:  # lost the race: undo the tallies and read again
                    entry = self._tallies[(site_id, event["experiment"])]
                    entry[str(event["variant"])][1] -= 1
                    self.counts["conversions"] -= 1
            else:
                log.warning("A/B conversion of %s lost three races", conversation_id)
                return []
        await self.announce(site_id, events)
        return [e["experiment"] for e in events]

    def _conversion_event_types(self) -> frozenset[str]:
        versions = self.service.registry.versions
        if self._event_types[0] != len(versions):
            types = frozenset(
                exp.convert_on.partition(":")[2]
                for flow in list(versions.values())
                for exp in flow.spec.experiments.values()
                if exp.convert_on.startswith("event:")
            )
            self._event_types = (len(versions), types)
        return self._event_types[1]

    async def on_event(self, event: Any) -> None:
        data, site_id = event.data, event.site_id
        conversation_id = data.get("conversation_id")
        if site_id is None or not isinstance(conversation_id, str):
            return
        if event.type in ("bot.exposure", "bot.conversion"):
            return
        # in a task of its own: the event may come from code holding the conversation's lock
        # (a turn's action, a handoff), which convert takes
        if event.type == "conversation.resolved":
            self.service.later(
                self._logged(self.convert(
                    site_id, conversation_id, "resolved_without_handoff", "resolved",
                    only_if=lambda c: not c.meta.get("bot_handoff"),
                ))
            )  # fmt: skip
        if event.type in self._conversion_event_types():
            match = f"event:{event.type}"
            self.service.later(self._logged(self.convert(site_id, conversation_id, match, "event")))

    @staticmethod
    async def _logged(coroutine: Any) -> None:
        try:
            await coroutine
        except Exception:
            log.exception("A/B conversion failed")

    # -- the ``track`` frame op -----------------------------------------------------------
    def _allow_track(self, site_id: str, visitor_id: str) -> bool:
        key, now = (site_id, visitor_id), time.monotonic()
        tokens, stamp = self._buckets.get(key, (self.track_burst, now))
        tokens = min(self.track_burst, tokens + (now - stamp) * self.track_rate)
        if len(self._buckets) > 10_000:  # forget visitors whose bucket is full again
            horizon = self.track_burst / self.track_rate
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < horizon}
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    async def track(self, conn: Any, frame: dict) -> dict:
        """``{"op": "track", "name": "purchase", "props": {...}, "conversation_id"?}``."""
        p = conn.principal
        if p.kind != "visitor":
            raise ApiError(403, "forbidden", "only visitors send track")
        name = frame.get("name")
        if name is None:
            raise ApiError(400, "missing_field", "field 'name' is required", field="name")
        if not isinstance(name, str) or not TRACK_NAME.match(name):
            raise ApiError(
                400, "invalid_field",
                "name: 1..64 letters, digits, '_', '.', ':', '-'", field="name",
            )  # fmt: skip
        props = frame.get("props")
        if props is not None:
            size = len(json.dumps(props, ensure_ascii=False, default=str))
            if not isinstance(props, dict) or size > MAX_PROPS_BYTES:
                raise ApiError(
                    400, "invalid_field",
                    f"props: an object of at most {MAX_PROPS_BYTES} bytes", field="props",
                )  # fmt: skip
        wanted = frame.get("conversation_id")
        if wanted is not None and (not isinstance(wanted, str) or len(wanted) > 64):
            raise ApiError(400, "invalid_field", "conversation_id: an id", field="conversation_id")
        if not self._allow_track(p.site_id, p.id):
            raise ApiError(429, "rate_limited", "too many track calls; try again later")
        self.counts["tracks"] += 1
        storage = self.kernel.storage
        if wanted is not None:
            found = await storage.get_conversation(p.site_id, wanted)
            if found is None or found.visitor_id != p.id:
                raise ApiError(404, "conversation_not_found", "no such conversation of yours")
            candidates = [found]
        else:
            candidates = await storage.list_conversations(p.site_id, visitor_id=p.id, limit=_RECENT)
        converted: list[str] = []
        match = f"track:{name}"
        for conversation in candidates:  # newest first: one conversion per experiment
            waiting = [
                e for e, r in _records(conversation).items()
                if r.get("convert_on") == match and not r.get("converted_at") and e not in converted
            ]  # fmt: skip
            if waiting:
                converted += await self.convert(p.site_id, conversation.id, match, "track")
        await self.kernel.emit(
            "visitor.tracked", p.site_id, visitor_id=p.id, name=name, props=props or {},
            converted=converted,
        )  # fmt: skip
        return {"op": "track_ok", "name": name, "converted": converted}

    # -- reports --------------------------------------------------------------------------
    def _conversations(self, site_id: str):
        return iter_conversations(self.kernel.storage, site_id)

    async def report(
        self, site_id: str, experiment_id: str, since: float | None = None
    ) -> dict[str, Any] | None:
        """The experiment's report for a site, or None when nobody was exposed to it."""
        return await experiment_report(self.kernel.storage, site_id, experiment_id, since)

    async def experiments(self, site_id: str) -> dict[str, int]:
        """Experiment id -> exposures, for every experiment seen in the site."""
        found: dict[str, int] = {}
        async for conversation in self._conversations(site_id):
            for exp_id in _records(conversation):
                found[exp_id] = found.get(exp_id, 0) + 1
        return found


async def iter_conversations(storage: Any, site_id: str):
    """Every conversation of a site, newest ``updated_at`` first, each once."""
    seen: set[str] = set()
    before: float | None = None
    while len(seen) < MAX_SCAN:
        page = await storage.list_conversations(site_id, limit=PAGE, before=before)
        fresh = [c for c in page if c.id not in seen]
        for conversation in fresh:
            seen.add(conversation.id)
            yield conversation
        if len(page) < PAGE or not fresh:
            return
        # the next page starts at the oldest one's time again: ties on the page boundary
        # are not skipped (ids dedupe)
        before = math.nextafter(page[-1].updated_at, math.inf)


async def experiment_report(
    storage: Any, site_id: str, experiment_id: str, since: float | None = None
) -> dict[str, Any] | None:
    """:func:`~.experiments.build_report` over a site's stored exposures (None: none)."""
    records, scanned = [], 0
    async for conversation in iter_conversations(storage, site_id):
        scanned += 1
        record = _records(conversation).get(experiment_id)
        if isinstance(record, dict):
            if since is not None and float(record.get("exposed_at") or 0) < since:
                continue
            records.append(record)
    if not records:
        return None
    report = build_report(experiment_id, records)
    report["site_id"] = site_id
    report["conversations_scanned"] = scanned
    return report
