"""Built-in selectors: ``weighted`` (default), ``round_robin``, ``least_open``, ``manual``.

A policy chooses one agent among those every filter accepted; it never sees
an ineligible agent. ``select`` returns None to leave the conversation waiting
(``manual`` always does: agents pick from the pool themselves).

Registered by name through ``kefu_routing_policies`` as ``factory(kernel)``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from kefu.core.errors import StartupError
from kefu.core.types import WeightFactor
from kefu.plugins.routing.snapshots import AgentSnapshot, ConversationSnapshot

log = logging.getLogger(__name__)


class Policy(Protocol):
    """What the engine needs from a selector."""

    name: str
    #: False for a pool policy: the engine then never assigns on its own.
    assigns: bool

    async def select(
        self, conversation: ConversationSnapshot, candidates: list[AgentSnapshot]
    ) -> AgentSnapshot | None: ...


def resolve_weights(
    factors: Iterable[WeightFactor], configured: Mapping[str, float]
) -> dict[str, float]:
    """Each factor's weight: the configured one, else the factor's default.

    Raises :class:`StartupError` naming the known factors when the config
    weighs a factor that no enabled plugin provides (a typo would otherwise
    silently do nothing).
    """
    known = {f.name: f.default_weight for f in factors}
    unknown = sorted(set(configured) - set(known))
    if unknown:
        raise StartupError(
            f"[routing.weights] names unknown factor {unknown[0]!r} "
            f"(available: {', '.join(sorted(known)) or 'none'})"
        )
    return {name: float(configured.get(name, default)) for name, default in known.items()}


class WeightedPolicy:
    """Highest ``sum(weight * factor(conversation, agent))`` wins.

    Ties go to the agent with more spare capacity, then to the one assigned
    longest ago, then to the first in the candidates' order (sorted by id).
    """

    name = "weighted"
    assigns = True

    def __init__(self, factors: Iterable[WeightFactor], weights: Mapping[str, float]) -> None:
        self.factors = tuple(factors)
        self._warned: set[str] = set()
        self.configure(weights)

    def configure(self, weights: Mapping[str, float]) -> None:
        """Swap in new weights (live reload); factors with weight 0 are skipped."""
        resolved = resolve_weights(self.factors, weights)
        self.weights = resolved
        self._terms = [(f, resolved[f.name]) for f in self.factors if resolved[f.name] > 0]

    async def score(self, conversation: ConversationSnapshot, agent: AgentSnapshot) -> float:
        total = 0.0
        for factor, weight in self._terms:
            try:
                value = factor.score(conversation, agent)
                if type(value) is not float and inspect.isawaitable(value):
                    value = await value
                value = float(value)
            except Exception:
                self._warn(factor.name, "raised; it scores 0", exc_info=True)
                continue
            if not 0.0 <= value <= 1.0:
                self._warn(factor.name, f"returned {value!r} outside 0..1; clamped")
                value = min(max(value, 0.0), 1.0)
            total += weight * value
        return total

    async def explain(
        self, conversation: ConversationSnapshot, agent: AgentSnapshot
    ) -> dict[str, float]:
        """Each factor's raw score for one agent (for debugging and the docs)."""
        scores = {}
        for factor in self.factors:
            value = factor.score(conversation, agent)
            scores[factor.name] = float(await value if inspect.isawaitable(value) else value)
        return scores

    async def select(
        self, conversation: ConversationSnapshot, candidates: list[AgentSnapshot]
    ) -> AgentSnapshot | None:
        best, best_key = None, None
        for agent in candidates:
            idle = -(agent.last_assigned_at if agent.last_assigned_at is not None else -1e18)
            key = (round(await self.score(conversation, agent), 9), agent.spare, idle)
            if best_key is None or key > best_key:
                best, best_key = agent, key
        return best

    def _warn(self, factor: str, what: str, exc_info: bool = False) -> None:
        if factor not in self._warned:  # once per factor: routing runs on every event
            self._warned.add(factor)
            log.warning("weight factor %r %s", factor, what, exc_info=exc_info)


class RoundRobinPolicy:
    """Take turns in agent-id order, per site, skipping agents who are not eligible."""

    name = "round_robin"
    assigns = True

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    async def select(
        self, conversation: ConversationSnapshot, candidates: list[AgentSnapshot]
    ) -> AgentSnapshot | None:
        if not candidates:
            return None
        ordered = sorted(candidates, key=lambda a: a.id)
        last = self._last.get(conversation.site_id)
        chosen = next((a for a in ordered if last is None or a.id > last), ordered[0])
        self._last[conversation.site_id] = chosen.id
        return chosen


class LeastOpenPolicy:
    """Fewest open conversations; ties go to the lower load ratio, then the longest idle."""

    name = "least_open"
    assigns = True

    async def select(
        self, conversation: ConversationSnapshot, candidates: list[AgentSnapshot]
    ) -> AgentSnapshot | None:
        def key(agent: AgentSnapshot) -> tuple:
            ratio = agent.open_count / agent.capacity if agent.capacity else 1.0
            last = agent.last_assigned_at if agent.last_assigned_at is not None else -1e18
            return (agent.open_count, ratio, last)

        return min(candidates, key=key, default=None)


class ManualPolicy:
    """Assign nothing: waiting conversations form a pool agents pick from."""

    name = "manual"
    assigns = False

    async def select(
        self, conversation: ConversationSnapshot, candidates: list[AgentSnapshot]
    ) -> AgentSnapshot | None:
        return None


def weighted_factory(kernel: Any) -> WeightedPolicy:
    """The ``weighted`` policy with every plugin's factors and ``[routing.weights]``."""
    factors = kernel.hooks.routing_weight_factors()
    return WeightedPolicy(factors, kernel.config.section("routing").weights)


BUILTIN_POLICIES = {
    "weighted": weighted_factory,
    "round_robin": lambda kernel: RoundRobinPolicy(),
    "least_open": lambda kernel: LeastOpenPolicy(),
    "manual": lambda kernel: ManualPolicy(),
}
