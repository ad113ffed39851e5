"""E-mail: left messages and missed chats notify the site's agents, visitors can get a
transcript. SMTP through aiosmtplib; templates in English and Chinese
(``templates/<lang>/*.txt``). Settings: ``[email]``
(:mod:`~kefu.plugins.email_notify.settings`); nothing is sent while ``host`` is empty.
docs/integrations.md, "E-mail".
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from kefu.core.errors import ApiError
from kefu.core.types import RestEndpoint
from kefu.hooks import hookimpl, listens_to
from kefu.plugins.email_notify.service import Mailer
from kefu.plugins.email_notify.settings import EmailSettings

STATE = "email_notify"
EMAIL_PATTERN = r"^[^@\x00-\x20\x7f-\x9f]+@[^@\x00-\x20\x7f-\x9f]+\.[^@\x00-\x20\x7f-\x9f]+$"


class TranscriptBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Annotated[str, StringConstraints(max_length=254, pattern=EMAIL_PATTERN)] | None = Field(
        None, description="Where to send it; default: the visitor's e-mail address."
    )


class TranscriptOut(BaseModel):
    to: str
    messages: int


def mailer_of(kernel: Any) -> Mailer | None:
    return kernel.existing_plugin_state(STATE)


@hookimpl
def kefu_config_schema():
    return {"email": EmailSettings}


@hookimpl
async def kefu_startup(kernel):
    if kernel.storage is not None and kernel.config.section("email").host:
        kernel.plugin_state(STATE, Mailer).start()


@hookimpl
async def kefu_shutdown(kernel):
    mailer = kernel.drop_plugin_state(STATE)
    if mailer is not None:
        await mailer.stop()


@hookimpl
@listens_to("offline_message.created", "conversation.queued")
def kefu_event(kernel, event):
    mailer = mailer_of(kernel)
    if mailer is not None:
        mailer.on_event(event)


@hookimpl
def kefu_stats(kernel):
    mailer = mailer_of(kernel)
    if mailer is None:
        return None
    return {"email_sent_total": mailer.sent, "email_failed_total": mailer.failed}


async def send_transcript(call: Any) -> TranscriptOut:
    mailer = mailer_of(call.kernel)
    if mailer is None:
        raise ApiError(503, "unavailable", "e-mail is not running")
    storage = call.kernel.storage
    conversation = await storage.get_conversation(call.site_id, call.params["id"])
    if conversation is None:
        raise ApiError(404, "conversation_not_found", "no such conversation in this site")
    await call.require("conversation.read", conversation)
    to = call.body.email
    if to is None:
        visitor = await storage.get_visitor(call.site_id, conversation.visitor_id)
        to = visitor.email if visitor is not None else None
    if not to:
        raise ApiError(409, "no_email", "no e-mail address: give one, or ask the visitor's")
    count = await mailer.transcript(call.site_id, conversation, to)
    return TranscriptOut(to=to, messages=count)


@hookimpl
def kefu_rest_endpoints(kernel):
    if not kernel.config.section("email").host:
        return None  # served only with an SMTP server configured (at start-up)
    return [
        RestEndpoint(
            "POST", "/v1/conversations/{id}/transcript", "send_transcript",
            "E-mail a conversation's transcript", "e-mail", send_transcript,
            response=TranscriptOut, status=202, body=TranscriptBody, errors=(403, 404, 409),
            description="The conversation's visitor or an agent of the site. To `email`, or "
            "the visitor's address (`409 no_email` when there is none); in the visitor's "
            "language (English or Chinese). Served only when `[email] host` is set.",
        )
    ]  # fmt: skip
