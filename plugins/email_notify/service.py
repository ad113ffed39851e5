"""E-mail of one kernel: notices to the site's agents, transcripts to visitors
(docs/integrations.md, "E-mail").

- **Left messages** (``offline_message.created``): every agent (or admin) of the site.
- **Missed chats**: a conversation still waiting for an agent ``missed_after_s`` after it
  was queued. The timer lives in the process that queued it; a storage record created only
  once (``email.notice``) makes the notice go out once across processes.
- **Transcripts**: ``POST /v1/conversations/{id}/transcript``, the conversation's messages
  to the visitor's e-mail address.

Messages are rendered from ``templates/<lang>/<name>.txt`` (first line ``Subject: ...``),
``en`` or ``zh``, and sent by a task with aiosmtplib, never on the path that caused them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import jinja2

from kefu.core.domain import QUEUED
from kefu.core.storage import VersionConflict

log = logging.getLogger(__name__)

NOTICE = "email.notice"  # record kind: one per notice sent (de-duplication)
TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=False,  # plain text mail
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)
WHO = {
    "en": {"visitor": "You", "system": "{site}", "bot": "Assistant"},
    "zh": {"visitor": "您", "system": "{site}", "bot": "智能助手"},
}


def language_of(value: Any, default: str) -> str:
    text = str(value or "").lower()
    return "zh" if text.startswith("zh") else "en" if text.startswith("en") else default


def render(language: str, name: str, **context: Any) -> tuple[str, str]:
    """(subject, body) of a template."""
    text = TEMPLATES.get_template(f"{language}/{name}.txt").render(**context)
    first, _, body = text.partition("\n")
    assert first.startswith("Subject: "), name
    return first[len("Subject: ") :].strip(), body.lstrip("\n")


class Mailer:
    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.tasks: set[asyncio.Task] = set()
        self.worker: asyncio.Task | None = None
        self.sent = self.failed = 0

    @property
    def settings(self) -> Any:
        return self.kernel.config.section("email")

    def start(self) -> None:
        self.worker = asyncio.create_task(self._send_loop(), name="kefu-email")

    async def stop(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        with contextlib.suppress(TimeoutError):  # what is queued goes out first
            await asyncio.wait_for(self.outbox.join(), self.settings.timeout_s)
        for task in [self.worker, *self.tasks]:
            if task is not None:
                task.cancel()

    # -- sending ------------------------------------------------------------------------
    def queue(self, to: list[str], subject: str, body: str) -> None:
        s = self.settings
        message = EmailMessage()
        message["From"] = s.sender
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain="kefu")
        message.set_content(body)
        self.outbox.put_nowait(message)

    async def _send_loop(self) -> None:
        while True:
            message = await self.outbox.get()
            try:
                await self._send(message)
            finally:
                self.outbox.task_done()

    async def _send(self, message: EmailMessage) -> None:
        s = self.settings
        for attempt in range(s.attempts):
            try:
                await aiosmtplib.send(
                    message, hostname=s.host, port=s.port, username=s.username or None,
                    password=s.password or None, start_tls=s.starttls, use_tls=s.tls,
                    timeout=s.timeout_s,
                )  # fmt: skip
                self.sent += 1
                return
            except (aiosmtplib.SMTPException, OSError) as exc:
                log.warning("e-mail to %s failed (attempt %d): %s", message["To"], attempt + 1, exc)
                await asyncio.sleep(2**attempt)
        self.failed += 1
        log.error("e-mail %r to %s not sent", message["Subject"], message["To"])

    # -- who and where ------------------------------------------------------------------
    async def recipients(self, site_id: str) -> list[str]:
        agents = await self.kernel.storage.list_agents(site_id)
        admins_only = self.settings.recipients == "admins"
        return sorted(
            {a.email for a in agents if a.email and (not admins_only or "admin" in a.roles)}
        )

    def console_url(self) -> str:
        base = self.settings.public_url or self.kernel.base_url
        return base.rstrip("/") + "/console"

    async def site_and_language(self, site_id: str) -> tuple[Any, str]:
        site = await self.kernel.storage.get_site(site_id)
        language = language_of((site.settings if site else {}).get("language"), "")
        return site, language or self.settings.language

    async def once(self, site_id: str, key: str) -> bool:
        """True the first time ``key`` is claimed in this site, on any process."""
        try:
            await self.kernel.storage.put_record(
                site_id, NOTICE, key, {"at": time.time()}, expect_version=0
            )
        except VersionConflict:
            return False
        return True

    # -- notices ------------------------------------------------------------------------
    def on_event(self, event: Any) -> None:
        site_id, data = event.site_id, event.data
        if site_id is None:
            return
        if event.type == "offline_message.created" and self.settings.notify_offline:
            self.later(self.offline_notice(site_id, data["conversation_id"], data["seq"]))
        elif event.type == "conversation.queued" and self.settings.missed_after_s:
            conversation_id = data["conversation_id"]
            if conversation_id not in self.timers:
                loop = asyncio.get_running_loop()
                self.timers[conversation_id] = loop.call_later(
                    self.settings.missed_after_s,
                    lambda: self.later(self.missed_notice(site_id, conversation_id)),
                )

    def later(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("e-mail notice failed", exc_info=task.exception())

    async def offline_notice(self, site_id: str, conversation_id: str, seq: int) -> None:
        storage = self.kernel.storage
        conversation = await storage.get_conversation(site_id, conversation_id)
        if conversation is None or not await self.once(site_id, f"offline/{conversation_id}/{seq}"):
            return
        note = conversation.meta.get("offline") or {}
        to = await self.recipients(site_id)
        if not to:
            return
        site, language = await self.site_and_language(site_id)
        subject, body = render(
            language, "offline", site_name=site.name if site else site_id,
            visitor_name=note.get("name") or conversation.visitor_id,
            visitor_email=note.get("email") or "", text=note.get("text", ""),
            console_url=self.console_url(),
        )  # fmt: skip
        self.queue(to, subject, body)

    async def missed_notice(self, site_id: str, conversation_id: str) -> None:
        self.timers.pop(conversation_id, None)
        storage = self.kernel.storage
        conversation = await storage.get_conversation(site_id, conversation_id)
        if conversation is None or conversation.state != QUEUED:
            return  # answered, or given to an agent, or closed meanwhile
        if conversation.meta.get("offline"):
            return  # the left message had its own notice
        recent = await storage.list_messages_before(
            site_id, conversation_id, before_seq=2**62, limit=100
        )
        if any(m.sender_kind == "agent" for m in recent):
            return  # an agent answered without taking it
        if not await self.once(site_id, f"missed/{conversation_id}"):
            return
        to = await self.recipients(site_id)
        if not to:
            return
        visitor = await storage.get_visitor(site_id, conversation.visitor_id)
        last = [m for m in recent if m.sender_kind == "visitor"][-1:]
        site, language = await self.site_and_language(site_id)
        subject, body = render(
            language, "missed", site_name=site.name if site else site_id,
            visitor_name=(visitor.name if visitor else None) or conversation.visitor_id,
            visitor_email=(visitor.email if visitor else None) or "",
            minutes=max(1, round((time.time() - conversation.created_at) / 60)),
            text=last[-1].text if last else "", console_url=self.console_url(),
        )  # fmt: skip
        self.queue(to, subject, body)

    async def transcript(self, site_id: str, conversation: Any, to: str) -> int:
        """Queue the transcript of ``conversation`` to ``to``; the number of messages."""
        storage = self.kernel.storage
        messages, after = [], 0
        while True:
            page = await storage.list_messages(site_id, conversation.id, after_seq=after)
            messages += page
            if len(page) < 100:
                break
            after = page[-1].seq
        visitor = await storage.get_visitor(site_id, conversation.visitor_id)
        site, language = await self.site_and_language(site_id)
        if visitor is not None and visitor.attributes.get("language"):
            language = language_of(visitor.attributes["language"], language)
        site_name = site.name if site else site_id
        names = {a.id: a.name for a in await storage.list_agents(site_id)}
        who = WHO[language]
        lines = [
            {
                "time": time.strftime("%Y-%m-%d %H:%M", time.gmtime(m.created_at)),
                "who": names.get(m.sender_id, "?")
                if m.sender_kind == "agent"
                else who.get(m.sender_kind, "{site}").format(site=site_name),
                "text": m.text or (m.attachment or {}).get("name", ""),
            }
            for m in messages
        ]
        subject, body = render(
            language, "transcript", site_name=site_name,
            visitor_name=(visitor.name if visitor else None) or "", lines=lines,
        )  # fmt: skip
        self.queue([to], subject, body)
        return len(messages)
