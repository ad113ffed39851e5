"""Built-in eligibility filters: who may be offered a conversation at all.

An agent is eligible only if every filter accepts it; policies then choose
among the eligible. Each filter is a pure ``accepts(conversation, agent)``
over :mod:`kefu.plugins.routing.snapshots`.
"""

from __future__ import annotations

from kefu.core.types import RoutingFilter
from kefu.plugins.routing.snapshots import ONLINE, AgentSnapshot, ConversationSnapshot

#: The capacity filter's name: the wait estimate counts agents that pass every other filter.
CAPACITY = "capacity"


def same_site(conversation: ConversationSnapshot, agent: AgentSnapshot) -> bool:
    """Tenancy: an agent only ever serves conversations of their own site."""
    return agent.site_id == conversation.site_id


def online_and_accepting(conversation: ConversationSnapshot, agent: AgentSnapshot) -> bool:
    """Online (not away, not offline) and not paused with "accept chats" switched off."""
    return agent.status == ONLINE and agent.accepting


def has_skill(conversation: ConversationSnapshot, agent: AgentSnapshot) -> bool:
    """Member of the department/skill the conversation needs (any agent when none)."""
    return conversation.skill is None or conversation.skill in agent.skills


def under_capacity(conversation: ConversationSnapshot, agent: AgentSnapshot) -> bool:
    """Fewer open conversations than the agent's capacity."""
    return agent.open_count < agent.capacity


def inside_business_hours(conversation: ConversationSnapshot, agent: AgentSnapshot) -> bool:
    """The conversation's site is open at the time of the routing pass."""
    return conversation.hours is None or conversation.hours.is_open(conversation.now)


def not_declined(conversation: ConversationSnapshot, agent: AgentSnapshot) -> bool:
    """The agent did not decline this conversation or let an offer of it time out."""
    return conversation.id not in agent.declined


BUILTIN_FILTERS: tuple[RoutingFilter, ...] = (
    RoutingFilter("same_site", same_site),
    RoutingFilter("online_accepting", online_and_accepting),
    RoutingFilter("skill", has_skill),
    RoutingFilter(CAPACITY, under_capacity),
    RoutingFilter("business_hours", inside_business_hours),
    RoutingFilter("not_declined", not_declined),
)
