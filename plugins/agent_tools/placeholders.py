"""Placeholders in canned replies and welcome messages: ``{visitor.name}``, ``{visitor.email}``,
``{agent.name}``, ``{site.name}``, each with an optional fallback after a bar
(``{visitor.name|there}``) used when the value is unknown. Anything else in braces is
left as written. An unknown value with no fallback takes the space before it along, so
"Hi {visitor.name}, welcome" reads "Hi, welcome" for an anonymous visitor, not "Hi , …"."""

from __future__ import annotations

import re
from typing import Any

from kefu.core.domain import Conversation

PLACEHOLDER = re.compile(
    r"( ?)\{(visitor\.name|visitor\.email|agent\.name|site\.name)(?:\|([^{}]*))?\}"
)
NAMES = ("visitor.name", "visitor.email", "agent.name", "site.name")


def render(template: str, values: dict[str, str | None]) -> str:
    """``template`` with each known placeholder replaced (its fallback, or "", when unknown)."""

    def replace(match: re.Match) -> str:
        space, value, fallback = match.group(1), values.get(match.group(2)), match.group(3)
        if value or fallback:
            return space + (value or fallback)
        return ""  # nothing to show: the space before it goes too

    return PLACEHOLDER.sub(replace, template)


async def values_for(
    kernel: Any, conversation: Conversation, agent_id: str | None = None
) -> dict[str, str | None]:
    """The placeholder values of a conversation, read from storage (only when needed)."""
    storage = kernel.storage
    visitor = await storage.get_visitor(conversation.site_id, conversation.visitor_id)
    site = await storage.get_site(conversation.site_id)
    agent = await storage.get_agent(conversation.site_id, agent_id) if agent_id else None
    return {
        "visitor.name": visitor.name if visitor else None,
        "visitor.email": visitor.email if visitor else None,
        "agent.name": agent.name if agent else None,
        "site.name": site.name if site else None,
    }
