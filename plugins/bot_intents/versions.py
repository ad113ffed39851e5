"""Flow versions: check, compile (training in a worker), keep every version, swap atomically.

:meth:`FlowRegistry.publish` checks a file's content, trains the intent classifier
off the event loop (a classifier is reused when the intents and examples did not
change), and makes the new version active for its flow in one assignment. Content
that fails a check raises :class:`FlowRejected`; the active version is untouched,
the failure is logged and counted. Every version ever compiled is kept by its
sha256, so a session can always finish on the version it began with, and an admin
can activate any of them or roll back to the one active before.
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


class FlowRegistry:
    """Every compiled version, and the active one per flow id."""

    def __init__(
        self,
        actions: Callable[[], Collection[str]] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self._actions = actions
        self._executor = executor
        #: campaign and segment names of the config (``when:`` checks); None: not checked
        self.known_names: Callable[[], dict[str, set[str]]] | None = None
        self.versions: dict[str, CompiledFlow] = {}
        self.history: dict[str, list[str]] = {}  # flow id -> shas, oldest first
        self.active: dict[str, str] = {}  # flow id -> sha
        self.activations: dict[str, list[str]] = {}  # flow id -> activation log
        self.stats = FlowStats()
        self._lock = asyncio.Lock()
        self._classifiers: OrderedDict[str, IntentClassifier | None] = OrderedDict()

    # -- publishing -----------------------------------------------------------------
    async def publish(
        self, data: bytes | str, source: str, *, activate: bool = True
    ) -> CompiledFlow:
        """Check and compile ``data``; make it active unless ``activate`` is False.

        :raises FlowRejected: the content failed a check (nothing changed).
        """
        raw = data.encode("utf-8") if isinstance(data, str) else data
        sha = hashlib.sha256(raw).hexdigest()
        async with self._lock:  # publications take effect in the order they were made
            flow = self.versions.get(sha)
            if flow is None:
                try:
                    flow = await self._compile(raw, sha, source)
                except FlowRejected as exc:
                    self.stats.rejected += 1
                    self.stats.last_error[source] = str(exc)
                    log.error("bot flow %s refused, the active version stays:\n%s", source, exc)
                    raise
                self.versions[sha] = flow
                self.history.setdefault(flow.id, []).append(sha)
                self.stats.published += 1
            self.stats.last_error.pop(source, None)
            if activate:
                self._activate(flow)
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
        classifier = await train_in_executor(
            texts, labels, TrainingOptions(threshold=0.0), executor=self._executor
        )
        log.info(
            "flow %s: trained %d intents on %d examples in %.2fs",
            spec.id, len(spec.intents), len(texts), time.perf_counter() - started,
        )  # fmt: skip
        self._classifiers[key] = classifier
        while len(self._classifiers) > _CLASSIFIER_CACHE:
            self._classifiers.popitem(last=False)
        return classifier

    # -- activation -----------------------------------------------------------------
    def _activate(self, flow: CompiledFlow) -> None:
        if self.active.get(flow.id) == flow.sha256:
            return
        self.active[flow.id] = flow.sha256  # the atomic swap: one assignment
        self.activations.setdefault(flow.id, []).append(flow.sha256)
        self.stats.activations += 1
        log.info("bot flow %s: version %s active (%s)", flow.id, flow.sha256[:12], flow.source)

    def activate(self, flow_id: str, sha: str) -> CompiledFlow:
        """Make a kept version active again. :raises KeyError: no such version of that flow."""
        flow = self.versions.get(sha)
        if flow is None or flow.id != flow_id:
            raise KeyError(sha)
        self._activate(flow)
        return flow

    def rollback(self, flow_id: str) -> CompiledFlow:
        """Activate the version that was active before the current one.

        :raises KeyError: the flow has no earlier active version.
        """
        log_ = self.activations.get(flow_id, [])
        current = self.active.get(flow_id)
        earlier = [sha for sha in log_[:-1] if sha != current]
        if not earlier:
            raise KeyError(flow_id)
        flow = self.versions[earlier[-1]]
        self._activate(flow)
        return flow

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
            versions = [
                {
                    "sha256": sha,
                    "active": sha == active,
                    "created_at": self.versions[sha].created_at,
                    "source": self.versions[sha].source,
                    "states": len(self.versions[sha].spec.states),
                    "intents": len(self.versions[sha].spec.intents),
                }
                for sha in reversed(shas)
            ]
            out.append({"id": flow_id, "active": active, "versions": versions})
        return out
