"""``POST /v1/agents/me/password``: an agent changes their own password (the console's
*Profile* page calls it). The current password is checked like a sign-in (throttled by
failures is the login's job; here a wrong one is a 403), the new one hashed slowly."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from pydantic import BaseModel, Field

from kefu.core.errors import ApiError
from kefu.core.types import RestEndpoint
from kefu.plugins.auth import passwords


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=8, max_length=256)


async def change_own_password(call: Any) -> None:
    principal = call.principal
    if principal is None or principal.kind != "agent":
        raise ApiError(403, "forbidden", "only agents have a password")
    storage = call.kernel.storage
    agent = await storage.get_agent(principal.site_id, principal.id)
    if agent is None:
        raise ApiError(404, "agent_not_found", "your account is gone")
    body = call.body
    if not await asyncio.to_thread(
        passwords.verify_password, body.current_password, agent.password_hash
    ):
        raise ApiError(403, "wrong_password", "the current password is not right")
    cost = call.kernel.config.section("auth").password_cost
    hashed = await asyncio.to_thread(passwords.hash_password, body.new_password, cost)
    await storage.update_agent(dataclasses.replace(agent, password_hash=hashed))
    await call.kernel.emit("agent.updated", principal.site_id, agent_id=agent.id)


def endpoints() -> list[RestEndpoint]:
    return [
        RestEndpoint(
            "POST", "/v1/agents/me/password", "change_own_password",
            "Change your own password", "agents", change_own_password,
            status=204, body=PasswordChange, errors=(403, 404),
            description="The agent of the token (or console session) sets a new password "
            "(8 to 256 characters) after giving the current one (403 `wrong_password`).",
        ),
    ]  # fmt: skip
