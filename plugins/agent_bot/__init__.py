"""The agent-bot API: an external bot service holds a site's new conversations, receives
their visitor messages on its webhook, answers through the REST API and hands over to
the human agents. See :mod:`~kefu.plugins.agent_bot.service`, docs/integrations.md and
the complete example bot in examples/agent-bot/.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from kefu.core.errors import ApiError
from kefu.core.types import RestEndpoint
from kefu.hooks import hookimpl, listens_to
from kefu.plugins.agent_bot.service import META, AgentBots

STATE = "agent_bot"
URL_PATTERN = r"^https?://[^/?#@\x00-\x20\x7f-\x9f]+(/[^\x00-\x20\x7f-\x9f]*)?$"
LINE = r"^[^\x00-\x1f\x7f-\x9f]*$"
TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BotBody(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=LINE)]
    url: Annotated[str, StringConstraints(max_length=2000, pattern=URL_PATTERN)] = Field(
        description="The bot's webhook: kefu POSTs conversation starts and visitor messages."
    )


class BotOut(BaseModel):
    id: str
    name: str
    url: str
    active: bool
    created_at: float
    token: str | None = Field(None, description="The bot's API token: only at registration.")
    secret: str | None = Field(None, description="The webhook signing secret: only then too.")


class BotList(BaseModel):
    bots: list[BotOut]


class SayBody(Strict):
    cid: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[!-~]+$")]
    text: Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=TEXT)]


class Said(BaseModel):
    seq: int
    cid: str


class HandoffBody(Strict):
    reason: Annotated[str, StringConstraints(max_length=200, pattern=LINE)] | None = None


class HandedOff(BaseModel):
    conversation_id: str
    state: str


def bots_of(kernel: Any) -> AgentBots | None:
    return kernel.existing_plugin_state(STATE)


def _bots(call: Any) -> AgentBots:
    found = bots_of(call.kernel)
    if found is None:
        raise ApiError(503, "unavailable", "the agent-bot API is not running (no storage)")
    return found


def _out(record_id: str, data: dict, **secret: Any) -> BotOut:
    fields = {k: data[k] for k in ("name", "url", "created_at")}
    return BotOut(id=record_id, active=data.get("active", True), **fields, **secret)


async def register(call: Any) -> BotOut:
    await call.require("agent_bots.manage", call.site_id)
    made = await _bots(call).register(call.site_id, call.body.name, call.body.url)
    return _out(made["id"], made, token=made["token"], secret=made["secret"])


async def list_bots(call: Any) -> BotList:
    await call.require("agent_bots.manage", call.site_id)
    return BotList(bots=[_out(r.id, r.data) for r in await _bots(call).bots(call.site_id)])


async def delete_bot(call: Any) -> None:
    await call.require("agent_bots.manage", call.site_id)
    if not await _bots(call).remove(call.site_id, call.params["id"]):
        raise ApiError(404, "unknown_bot", "no such bot in this site")


async def say(call: Any) -> Said:
    stored = await _bots(call).say(call.principal, call.params["id"], call.body.cid,
                                   call.body.text)  # fmt: skip
    return Said(seq=stored.seq, cid=stored.cid)


async def handoff(call: Any) -> HandedOff:
    fresh = await _bots(call).hand_off(call.principal, call.params["id"], call.body.reason)
    return HandedOff(conversation_id=fresh.id, state=fresh.state)


@hookimpl
async def kefu_startup(kernel):
    if kernel.storage is not None:
        await kernel.plugin_state(STATE, AgentBots).start()


@hookimpl
async def kefu_shutdown(kernel):
    bots = kernel.drop_plugin_state(STATE)
    if bots is not None:
        await bots.stop()


@hookimpl(tryfirst=True)
async def kefu_auth_authenticate(kernel, request, token):
    bots = bots_of(kernel)
    return None if bots is None else await bots.authenticate(token)


@hookimpl(tryfirst=True)
async def kefu_bot_takes(kernel, conversation):
    bots = bots_of(kernel)
    bot = None if bots is None else await bots.bot_of_site(conversation.site_id)
    if bot is None:
        return None
    conversation.meta = {**conversation.meta, META: bot["id"]}  # it holds this one
    return True


@hookimpl(tryfirst=True)
async def kefu_bot_serves(kernel, site_id):
    bots = bots_of(kernel)
    return None if bots is None or await bots.bot_of_site(site_id) is None else True


@hookimpl(tryfirst=True)
async def kefu_bot_reply(kernel, conversation, message):
    """A conversation the external bot holds: the built-in bot stays silent."""
    from kefu.core.types import BotReply

    return BotReply() if conversation.meta.get(META) else None


@hookimpl
@listens_to("message.stored", "conversation.started")
def kefu_event(kernel, event):
    bots = bots_of(kernel)
    if bots is not None:
        bots.on_event(event)


@hookimpl
def kefu_rest_endpoints(kernel):
    base, conv = "/v1/agent_bots", "/v1/agent_bot/conversations/{id}"
    bot_auth = "With the bot's token (`Authorization: Bearer kb_...`)."
    return [
        RestEndpoint("POST", base, "register_agent_bot", "Register an external bot",
                     "agent bots", register, response=BotOut, status=201, body=BotBody,
                     errors=(403,), description="Admins. The site's new conversations start "
                     "with it. The answer holds its API token and webhook secret, shown once."),
        RestEndpoint("GET", base, "list_agent_bots", "List the site's external bots",
                     "agent bots", list_bots, response=BotList, errors=(403,)),
        RestEndpoint("DELETE", f"{base}/{{id}}", "delete_agent_bot", "Remove an external bot",
                     "agent bots", delete_bot, status=204, errors=(403, 404)),
        RestEndpoint("POST", f"{conv}/messages", "agent_bot_say",
                     "Answer in a conversation the bot holds", "agent bots", say,
                     response=Said, status=201, body=SayBody, errors=(403, 404, 409),
                     description=f"{bot_auth} Idempotent by `cid`."),
        RestEndpoint("POST", f"{conv}/handoff", "agent_bot_handoff",
                     "Hand a conversation to the human agents", "agent bots", handoff,
                     response=HandedOff, body=HandoffBody, errors=(403, 404, 409),
                     description=f"{bot_auth} It waits for an agent (routing) from now on."),
    ]  # fmt: skip
