"""Built-in weight factors of the ``weighted`` policy.

Each factor scores one eligible agent for one conversation in 0..1 (higher is
a better choice); the policy adds ``weight * score`` over every factor that any
plugin contributed. Default weights were tuned with ``tests/bench/routing_sim.py``
(see ``docs/routing.md``); ``[routing.weights]`` overrides them.
"""

from __future__ import annotations

import math

from kefu.core.types import WeightFactor
from kefu.plugins.routing.snapshots import AgentSnapshot, ConversationSnapshot

#: First-response time that scores 0.5: faster agents approach 1, slower ones 0.
FIRST_RESPONSE_REFERENCE_S = 30.0
#: Idle time after which an agent scores about 0.63 on ``idle_time`` (1 - 1/e).
IDLE_REFERENCE_S = 300.0
#: Score given when a statistic is not known yet: neither favoured nor penalised.
NEUTRAL = 0.5


def load(conversation: ConversationSnapshot, agent: AgentSnapshot) -> float:
    """Spare share of capacity: 1 when free, 0 when full (open conversations, not lifetime)."""
    if agent.capacity <= 0:
        return 0.0
    return max(0.0, 1.0 - agent.open_count / agent.capacity)


def skill_match(conversation: ConversationSnapshot, agent: AgentSnapshot) -> float:
    """How focused the agent is on what is asked: a specialist scores 1, a generalist less.

    Sending work to the narrowest qualified agent keeps multi-skilled agents
    free for the departments only they can serve.
    """
    others = len(agent.skills - {conversation.skill}) if conversation.skill else len(agent.skills)
    return 1.0 / (1.0 + others)


def first_response(conversation: ConversationSnapshot, agent: AgentSnapshot) -> float:
    """Recent first-response time: 1 for instant, 0.5 at 30 s, towards 0 when slow."""
    if agent.first_response_s is None:
        return NEUTRAL
    return FIRST_RESPONSE_REFERENCE_S / (FIRST_RESPONSE_REFERENCE_S + agent.first_response_s)


def satisfaction(conversation: ConversationSnapshot, agent: AgentSnapshot) -> float:
    """Recent satisfaction (CSAT) of the agent's visitors, 0..1."""
    return NEUTRAL if agent.satisfaction is None else agent.satisfaction


def idle_time(conversation: ConversationSnapshot, agent: AgentSnapshot) -> float:
    """Time since the agent's last assignment: spreads new work over the team."""
    if agent.last_assigned_at is None:
        return 1.0
    idle = max(conversation.now - agent.last_assigned_at, 0.0)
    return 1.0 - math.exp(-idle / IDLE_REFERENCE_S)


def returning_visitor(conversation: ConversationSnapshot, agent: AgentSnapshot) -> float:
    """1 for the agent who served this visitor last time, else 0."""
    return 1.0 if agent.id == conversation.previous_agent_id else 0.0


BUILTIN_FACTORS: tuple[WeightFactor, ...] = (
    WeightFactor("load", load, 5.0, "spare share of capacity (open, never lifetime)"),
    WeightFactor("skill_match", skill_match, 1.0, "specialists before generalists"),
    WeightFactor("first_response", first_response, 1.0, "recent first-response time"),
    WeightFactor("satisfaction", satisfaction, 0.5, "recent CSAT of the agent"),
    WeightFactor("idle_time", idle_time, 0.5, "time since the last assignment"),
    WeightFactor("returning_visitor", returning_visitor, 1.5, "the visitor's previous agent"),
)
