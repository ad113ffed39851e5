"""Flow versions: check, compile (training in a worker), keep every version, swap atomically.

:meth:`FlowRegistry.publish` checks a file's content, trains the intent classifier
off the event loop (a classifier is reused when the intents and examples did not
change), and makes the new version active for its flow in one assignment. Content
that fails a check raises :class:`FlowRejected`; the active version is untouched,
the failure is logged and counted. Every version ever compiled is kept by its
sha256, so a session can always finish on the version it began with, and an admin
can activate any of them or roll back to the one active before. With a ``store``
(:mod:`~kefu.plugins.bot_intents.store`: storage records in a running kefu) every
version's content, the active pointer and the activation log are written there and
:meth:`restore` reads them back at start-up; a kept version is compiled again on demand
(:meth:`load`). Several processes share one store: each write merges what another
wrote, :attr:`on_saved` tells the others (over the bus), and :meth:`refresh` takes in
what another process saved.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from kefu.plugins.bot_intents.classifier import (
    IntentClassifier,
    TrainingOptions,
    train_in_executor,
)
from kefu.plugins.bot_intents.engine import CompiledFlow
from kefu.plugins.bot_intents.flow_yaml import FlowError
from kefu.plugins.bot_intents.flows import FlowSpec
from kefu.plugins.bot_intents.validate import check_flow, format_problems

log = logging.getLogger(__name__)

_CLASSIFIER_CACHE = 16


class FlowRejected(Exception):
    """A flow that failed its checks; ``problems`` carry lines."""

    def __init__(self, source: str, problems: list[FlowError]) -> None:
        super().__init__(format_problems(source, problems))
        self.source = source
        self.problems = problems


@dataclass
class FlowStats:
    published: int = 0
    rejected: int = 0
    activations: int = 0
    last_error: dict[str, str] = field(default_factory=dict)  # source -> message
    rejections: dict[str, int] = field(default_factory=dict)  # source -> refusals


class FlowRegistry:
    """Every compiled version, and the active one per flow id."""

    def __init__(
        self,
        actions: Callable[[], Collection[str]] | None = None,
        executor: Executor | None = None,
        training: TrainingOptions | None = None,
    ) -> None:
        self._actions = actions
        self._executor = executor
        self._training = training or TrainingOptions(threshold=0.0)
        #: campaign and segment names of the config (``when:`` checks); None: not checked
        self.known_names: Callable[[], dict[str, set[str]]] | None = None
        self.versions: dict[str, CompiledFlow] = {}
        self.history: dict[str, list[str]] = {}  # flow id -> shas, oldest first
        self.active: dict[str, str] = {}  # flow id -> sha
        self.activations: dict[str, list[str]] = {}  # flow id -> activation log
        self.stats = FlowStats()
        self._lock = asyncio.Lock()
        self._classifiers: OrderedDict[str, IntentClassifier | None] = OrderedDict()
        #: every kept version, compiled or not: sha -> flow_id, created_at, source, counts
        self.kept: dict[str, dict] = {}
        self.activation_log: dict[str, list[dict]] = {}  # flow id -> {sha256, by, at}
        self.store: Any = None  # persistence (store.py); None: memory only
        #: called with a flow id once its record was saved (the service tells the others)
        self.on_saved: Callable[[str], None] | None = None
        self._texts: dict[str, bytes] = {}  # contents when there is no store
        self._loading: dict[str, asyncio.Future] = {}

    # -- publishing -----------------------------------------------------------------
    async def publish(
        self, data: bytes | str, source: str, *, activate: bool = True, by: str = "file"
    ) -> CompiledFlow:
        """Check and compile ``data``; make it active unless ``activate`` is False.

        ``by`` names what activated it in the activation log (``file``, ``api``...).

        :raises FlowRejected: the content failed a check (nothing changed).
        """
        raw = data.encode("utf-8") if isinstance(data, str) else data
        sha = hashlib.sha256(raw).hexdigest()
        async with self._lock:  # publications take effect in the order they were made
            flow = self.versions.get(sha) or await self.load(sha)
            if flow is None:
                try:
                    flow = await self._compile(raw, sha, source)
                except FlowRejected as exc:
                    self.stats.rejected += 1
                    self.stats.rejections[source] = self.stats.rejections.get(source, 0) + 1
                    self.stats.last_error[source] = str(exc)
                    log.error("bot flow %s refused, the active version stays:\n%s", source, exc)
                    raise
                self.versions[sha] = flow
                if sha not in self.kept:
                    self.history.setdefault(flow.id, []).append(sha)
                    self.stats.published += 1
                    await self._keep(flow, raw)
                elif self.store is not None:  # kept, but its stored content was lost
                    await self.store.save_version(sha, raw)
            self.stats.last_error.pop(source, None)
            if self.store is not None:
                await self.store.saw(source, sha)
            if activate:
                await self._activate(flow, by)
            return flow

    async def _keep(self, flow: CompiledFlow, raw: bytes) -> None:
        spec = flow.spec
        self.kept[flow.sha256] = {
            "sha256": flow.sha256, "flow_id": flow.id, "created_at": flow.created_at,
            "source": flow.source, "states": len(spec.states), "intents": len(spec.intents),
            "sites": list(spec.sites),
        }  # fmt: skip
        if self.store is None:
            self._texts[flow.sha256] = raw
            return
        await self.store.save_version(flow.sha256, raw)
        await self._persist(flow.id)

    async def _persist(self, flow_id: str) -> None:
        """Save the flow's record (merged with what another process saved: taken in)."""
        if self.store is None:
            return
        record = {
            "id": flow_id,
            "active": self.active.get(flow_id),
            "versions": [self.kept[sha] for sha in self.history.get(flow_id, [])],
            "activations": self.activation_log.get(flow_id, []),
        }
        try:
            merged = await self.store.save_flow(record)
        except Exception:
            log.exception("bot flow %s: could not save its versions", flow_id)
            return
        await self._adopt(merged)
        if self.on_saved is not None:
            self.on_saved(flow_id)

    async def source_text(self, sha: str) -> bytes | None:
        """The exact content of a kept version."""
        if self.store is not None:
            return await self.store.read(sha)
        return self._texts.get(sha)

    # -- restart --------------------------------------------------------------------
    async def restore(self) -> None:
        """Read the kept versions and active pointers from the store (at start-up).

        Only the active versions are compiled now; the others when first needed.
        """
        if self.store is None:
            return
        for record in await self.store.flows():
            await self._adopt(record)

    async def refresh(self, flow_id: str) -> None:
        """Another process saved the flow: take in its versions and its active one."""
        if self.store is None:
            return
        async with self._lock:
            record = await self.store.flow(flow_id)
            if record is not None:
                await self._adopt(record)

    async def _adopt(self, record: dict) -> None:
        """Make a stored flow record this registry's: new versions kept, the activation
        log, the active version (compiled now)."""
        flow_id = record["id"]
        for meta in record.get("versions") or []:
            sha = meta.get("sha256") if isinstance(meta, dict) else None
            if sha and sha not in self.kept and await self.store.has(sha):
                self.kept[sha] = {**meta, "flow_id": flow_id}
                self.history.setdefault(flow_id, []).append(sha)
        entries = [a for a in record.get("activations") or [] if a.get("sha256") in self.kept]
        self.activation_log[flow_id] = entries
        self.activations[flow_id] = [a["sha256"] for a in entries]
        active = record.get("active")
        if active == self.active.get(flow_id):
            return
        flow = await self.load(active) if active in self.kept else None
        if flow is not None:
            self.active[flow_id] = active
            log.info("bot flow %s: version %s active (stored)", flow_id, active[:12])

    async def load(self, sha: str) -> CompiledFlow | None:
        """A kept version, compiled from its stored content if needed; None if unknown."""
        flow = self.versions.get(sha)
        if flow is not None or sha not in self.kept:
            return flow
        pending = self._loading.get(sha)
        if pending is None:
            pending = self._loading[sha] = asyncio.ensure_future(self._load(sha))
            pending.add_done_callback(lambda _f: self._loading.pop(sha, None))
        return await asyncio.shield(pending)

    async def _load(self, sha: str) -> CompiledFlow | None:
        meta = self.kept[sha]
        raw = await self.source_text(sha)
        if raw is None:
            log.error("bot flow %s: kept version %s has no content", meta["flow_id"], sha[:12])
            return None
        try:
            flow = await self._compile(raw, sha, str(meta.get("source", "")))
        except FlowRejected as exc:
            log.error("bot flow version %s no longer passes its checks:\n%s", sha[:12], exc)
            return None
        flow.created_at = float(meta.get("created_at") or flow.created_at)
        self.versions[sha] = flow
        return flow

    async def _compile(self, raw: bytes, sha: str, source: str) -> CompiledFlow:
        actions = None if self._actions is None else set(self._actions())
        known = None if self.known_names is None else self.known_names()
        checked, problems = check_flow(raw, actions, known)
        if checked is None:
            raise FlowRejected(source, problems)
        classifier = await self._classifier(checked.spec)
        return CompiledFlow(checked.spec, sha, checked.patterns, classifier, source)

    async def _classifier(self, spec: FlowSpec) -> IntentClassifier | None:
        if len(spec.intents) < 2:
            return None
        texts = [e for intent in spec.intents.values() for e in intent.examples]
        labels = [intent.name for intent in spec.intents.values() for _ in intent.examples]
        key = hashlib.sha256(json.dumps([texts, labels], ensure_ascii=False).encode()).hexdigest()
        if key in self._classifiers:
            self._classifiers.move_to_end(key)
            return self._classifiers[key]
        started = time.perf_counter()
        classifier = await train_in_executor(texts, labels, self._training, executor=self._executor)
        log.info(
            "flow %s: trained %d intents on %d examples in %.2fs",
            spec.id, len(spec.intents), len(texts), time.perf_counter() - started,
        )  # fmt: skip
        self._classifiers[key] = classifier
        while len(self._classifiers) > _CLASSIFIER_CACHE:
            self._classifiers.popitem(last=False)
        return classifier

    # -- activation -----------------------------------------------------------------
    async def _activate(self, flow: CompiledFlow, by: str = "file") -> None:
        if self.active.get(flow.id) == flow.sha256:
            return
        self.active[flow.id] = flow.sha256  # the atomic swap: one assignment
        self.activations.setdefault(flow.id, []).append(flow.sha256)
        entry = {"sha256": flow.sha256, "by": by, "at": time.time()}
        self.activation_log.setdefault(flow.id, []).append(entry)
        self.stats.activations += 1
        log.info("bot flow %s: version %s active (%s)", flow.id, flow.sha256[:12], flow.source)
        await self._persist(flow.id)

    async def activate(self, flow_id: str, sha: str, by: str = "api") -> CompiledFlow:
        """Make a kept version active again. :raises KeyError: no such version of that flow.

        The version must be compiled (``await load(sha)`` first after a restart).
        """
        flow = self.versions.get(sha)
        if flow is None or flow.id != flow_id:
            raise KeyError(sha)
        async with self._lock:
            await self._activate(flow, by)
        return flow

    async def rollback(self, flow_id: str) -> CompiledFlow:
        """Activate the version that was active before the current one.

        :raises KeyError: the flow has no earlier active version.
        """
        log_ = self.activations.get(flow_id, [])
        current = self.active.get(flow_id)
        earlier = [sha for sha in log_[:-1] if sha != current]
        if not earlier:
            raise KeyError(flow_id)
        flow = self.versions[earlier[-1]]
        async with self._lock:
            await self._activate(flow, "rollback")
        return flow

    def rollback_target(self, flow_id: str) -> str | None:
        """The version :meth:`rollback` would activate (to :meth:`load` it first)."""
        current = self.active.get(flow_id)
        earlier = [sha for sha in self.activations.get(flow_id, [])[:-1] if sha != current]
        return earlier[-1] if earlier else None

    # -- lookups --------------------------------------------------------------------
    def get(self, sha: str) -> CompiledFlow | None:
        return self.versions.get(sha)

    def active_flow(self, flow_id: str) -> CompiledFlow | None:
        sha = self.active.get(flow_id)
        return self.versions.get(sha) if sha else None

    def for_site(self, site_id: str) -> CompiledFlow | None:
        """The active flow serving ``site_id`` (flows in id order; a named site beats ``*``)."""
        candidates = [self.versions[sha] for _, sha in sorted(self.active.items())]
        named = [f for f in candidates if site_id in f.spec.sites]
        anywhere = [f for f in candidates if "*" in f.spec.sites]
        return (named or anywhere or [None])[0]

    def describe(self) -> list[dict]:
        """Flows with their versions, newest first, for the admin API."""
        out = []
        for flow_id, shas in sorted(self.history.items()):
            active = self.active.get(flow_id)
            last: dict[str, dict] = {}  # sha -> its latest activation
            for entry in self.activation_log.get(flow_id, []):
                last[entry["sha256"]] = entry
            versions = [
                {
                    **{k: self.kept[sha][k] for k in ("created_at", "source", "states", "intents")},
                    "sha256": sha,
                    "active": sha == active,
                    "activated_by": last.get(sha, {}).get("by"),
                    "activated_at": last.get(sha, {}).get("at"),
                    "loaded": sha in self.versions,
                }
                for sha in reversed(shas)
            ]
            sites = self.kept[active or shas[-1]].get("sites") or ["*"]
            out.append({"id": flow_id, "active": active, "sites": sites, "versions": versions})
        return out
