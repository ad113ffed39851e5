"""Everyday agent tools: private notes, tags, canned replies, a welcome message, the
leave-a-message form and satisfaction ratings (CSAT).

Each is a REST endpoint (``kefu_rest_endpoints``) and, where a live client needs
it, a frame op (``kefu_transport_frame_handlers``): ``note``, ``tag``, ``rate``,
``leave_message``. Canned replies are expanded by a message pipeline processor
(an agent types ``/shortcut``). The plugin reacts to ``conversation.started``
(welcome message), ``conversation.resolved`` (asks for a rating) and
``conversation.transferred`` (keeps the transfer's note as a private note), and
emits ``conversation.note_added``, ``conversation.tagged``, ``conversation.rated``,
``canned_reply.created/updated/deleted``, ``site.welcome_message_changed`` and
``offline_message.created``.
Settings: ``[agent_tools]`` (:mod:`~kefu.plugins.agent_tools.settings`).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from kefu.core.types import Principal
from kefu.hooks import hookimpl, listens_to
from kefu.plugins.agent_tools.annotations import Annotations
from kefu.plugins.agent_tools.api import make_endpoints, make_ops
from kefu.plugins.agent_tools.canned import CannedReplies
from kefu.plugins.agent_tools.edits import Edits
from kefu.plugins.agent_tools.greetings import OFFLINE_TRANSPORT, Greetings
from kefu.plugins.agent_tools.settings import AgentToolsSettings


class Tools:
    """The agent tools of one kernel."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.edits = Edits(kernel)
        self.annotations = Annotations(kernel, self.edits)
        self.canned = CannedReplies(kernel, self.edits)
        self.greetings = Greetings(kernel, self.edits)
        self.tasks: set[asyncio.Task] = set()

    def later(self, coroutine: Any) -> None:
        """Run after the current frame is answered (the ``started`` reply comes first)."""
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def on_event(self, event: Any) -> None:
        data, site_id = event.data, event.site_id
        if site_id is None:
            return
        if event.type == "conversation.started" and data.get("transport") != OFFLINE_TRANSPORT:
            self.later(self.greetings.welcome(site_id, data["conversation_id"]))
        elif event.type == "conversation.resolved":
            await self.annotations.ask_rating(site_id, data["conversation_id"])
        elif event.type == "conversation.transferred" and data.get("note") and data.get("by_id"):
            by = Principal("agent", data["by_id"], site_id, frozenset({"agent"}))
            await self.annotations.add_note(
                by, data["conversation_id"], data["note"], source="transfer"
            )


_TOOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tools_of(kernel: Any) -> Tools | None:
    """The running tools of a kernel, None before start-up or without storage."""
    return _TOOLS.get(kernel)


@hookimpl
def kefu_config_schema():
    return {"agent_tools": AgentToolsSettings}


def _tools(kernel: Any) -> Tools:
    found = _TOOLS.get(kernel)
    if found is None:
        found = _TOOLS[kernel] = Tools(kernel)
    return found


@hookimpl
async def kefu_startup(kernel):
    if kernel.storage is not None:
        _tools(kernel)


@hookimpl
async def kefu_shutdown(kernel):
    tools = _TOOLS.pop(kernel, None)
    if tools is not None:
        for task in tools.tasks:
            task.cancel()


@hookimpl
def kefu_rest_endpoints(kernel):
    return make_endpoints(tools_of)


@hookimpl
def kefu_transport_frame_handlers(kernel):
    return make_ops(lambda: _TOOLS.get(kernel))


@hookimpl
def kefu_pipeline_processors(kernel):
    return [_tools(kernel).canned.processor()]  # collected when the gateway starts


@hookimpl
@listens_to("conversation.started", "conversation.resolved", "conversation.transferred")
async def kefu_event(kernel, event):
    tools = _TOOLS.get(kernel)
    if tools is not None:
        await tools.on_event(event)
