"""The ``[agent_tools]`` section of kefu.toml.

Example::

    [agent_tools]
    welcome_message = "Hi {visitor.name|there}, welcome to {site.name}! How can we help?"
    csat = true          # ask for a rating (1 to 5) when a conversation is resolved
"""

from __future__ import annotations

from pydantic import Field

from kefu.core.config import Section


class AgentToolsSettings(Section):
    """Defaults of the everyday agent tools; sites override some in their settings."""

    #: Sent as a system message when a visitor starts a conversation, unless the site's own
    #: ``welcome_message`` (``PUT /v1/welcome_message``) says otherwise; "" sends none.
    #: Placeholders: ``{visitor.name}``, ``{visitor.email}``, ``{site.name}``, with an
    #: optional fallback: ``{visitor.name|there}``.
    welcome_message: str = Field("", max_length=4000)
    #: What a visitor whose widget is in Chinese gets instead ("": ``welcome_message``).
    welcome_message_zh: str = Field("", max_length=4000)
    #: Ask the visitor for a satisfaction rating, 1 to 5 (``csat_request`` frame), at resolve.
    csat: bool = True
    #: Private notes kept per conversation (the oldest go first).
    max_notes: int = Field(200, ge=1, le=10_000)
