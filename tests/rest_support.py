"""Helpers for the REST API tests: a site with data, authorised requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kefu.core.domain import Conversation, Message, Visitor, new_id
from kefu.core.kernel import Kernel
from tests.chat_support import SiteFixture, add_site, login


@dataclass
class World:
    """A site with an admin, an agent, two visitors and their conversations, plus tokens."""

    site: SiteFixture
    admin_token: str
    agent_token: str
    visitors: list[Visitor] = field(default_factory=list)
    conversations: list[Conversation] = field(default_factory=list)

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def agent(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.agent_token}"}


async def add_conversation(
    kernel: Kernel,
    site_id: str,
    visitor_id: str,
    *,
    state: str = "queued",
    at: float = 1000.0,
    assignee_id: str | None = None,
    messages: int = 0,
) -> Conversation:
    conversation = await kernel.storage.create_conversation(
        Conversation(
            new_id(),
            site_id,
            visitor_id,
            state=state,
            assignee_id=assignee_id,
            created_at=at,
            updated_at=at,
        )
    )
    for n in range(messages):
        await kernel.storage.append_message(
            Message(
                site_id,
                conversation.id,
                f"c{n}",
                "visitor",
                visitor_id,
                text=f"m{n + 1}",
                created_at=at,
            )
        )
    return await kernel.storage.get_conversation(site_id, conversation.id)


async def build_world(client: Any, kernel: Kernel, site_id: str | None = None) -> World:
    site = await add_site(kernel, site_id)
    world = World(
        site,
        await login(client, site.site.id, site.admin.email),
        await login(client, site.site.id, site.agent.email),
    )
    for name in ("Vera", "Victor"):
        world.visitors.append(
            await kernel.storage.upsert_visitor(Visitor(new_id(), site.site.id, name=name))
        )
    return world


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
