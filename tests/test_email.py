"""E-mail (plugins/email_notify) against a real SMTP server (aiosmtpd on a free local port):
a left message reaches every agent of the site, a missed chat too (and an answered one
does not), a transcript reaches the visitor; English and Chinese templates."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time

import pytest

from tests.chat_support import (
    add_site,
    app_kernel,
    make_kernel,
    open_chat,
    visitor_session,
    ws_peer,
)
from tests.cluster_support import free_port

aiosmtpd = pytest.importorskip("aiosmtpd.controller")


class Inbox:
    """aiosmtpd's handler: every message with its envelope."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope):
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 OK"

    async def wait(self, count: int, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{len(self.messages)} of {count} e-mails"
            await asyncio.sleep(0.05)


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = aiosmtpd.Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


async def _kefu(aiohttp_client, tmp_path, port: int, extra: str = ""):
    from kefu.core.web_app import create_app

    config = (
        f'[email]\nhost = "127.0.0.1"\nport = {port}\nsender = "Shop <support@shop.test>"\n'
        f'public_url = "https://chat.shop.test"\n{extra}'
        "[plugins]\ndisable = ['bot_intents']\n"
    )
    client = await aiohttp_client(create_app(make_kernel(tmp_path, config)))
    return client, app_kernel(client.app)


async def test_a_left_message_reaches_every_agent_of_the_site(aiohttp_client, tmp_path, smtp):
    inbox, port = smtp
    client, kernel = await _kefu(aiohttp_client, tmp_path, port)
    site = await add_site(kernel)
    other = await add_site(kernel)  # its agents get nothing
    session = await visitor_session(client, site.site.widget_key)
    resp = await client.post(
        "/v1/offline_messages",
        json={"name": "Li Lei", "email": "lilei@example.com", "text": "Is the blue one back?"},
        headers={"Authorization": f"Bearer {session['token']}"},
    )
    assert resp.status == 201, await resp.text()
    await inbox.wait(1)
    await asyncio.sleep(0.3)  # a second message would come now
    ((sender, rcpt, message),) = inbox.messages
    assert sender == "support@shop.test"
    assert sorted(rcpt) == sorted([site.admin.email, site.agent.email])
    assert not {other.admin.email, other.agent.email} & set(rcpt)
    assert message["Subject"] == f"New message from Li Lei on {site.site.name}"
    body = message.get_content()
    assert "Is the blue one back?" in body and "lilei@example.com" in body
    assert "https://chat.shop.test/console" in body


async def test_chinese_site_missed_chat_and_an_answered_one(aiohttp_client, tmp_path, smtp):
    inbox, port = smtp
    client, kernel = await _kefu(aiohttp_client, tmp_path, port, "missed_after_s = 0.3\n")
    site = await add_site(kernel)
    site.site.settings = {**site.site.settings, "language": "zh-CN"}
    await kernel.storage.update_site(site.site)
    answered = await open_chat(client, site)  # an agent answers this one at once
    await answered.agent.send(
        op="send", conversation_id=answered.conversation_id, cid="hi", text="Hello!"
    )
    await answered.agent.expect("ack", cid="hi")
    missed = await visitor_session(client, site.site.widget_key)
    visitor = await ws_peer(client, missed["token"])
    await visitor.send(op="start")
    conversation_id = (await visitor.expect("started"))["conversation"]["id"]
    await visitor.send(op="send", conversation_id=conversation_id, cid="q1", text="有人吗")
    await visitor.expect("ack", cid="q1")
    await inbox.wait(1)
    await asyncio.sleep(0.6)  # the answered chat's timer has run out too by now
    ((_, rcpt, message),) = inbox.messages
    assert sorted(rcpt) == sorted([site.admin.email, site.agent.email])
    assert message["Subject"].startswith(f"{site.site.name} 未接会话")
    body = message.get_content()
    assert "有人吗" in body and "至今无人接待" in body


async def test_a_transcript_reaches_the_visitor(aiohttp_client, tmp_path, smtp):
    inbox, port = smtp
    client, kernel = await _kefu(aiohttp_client, tmp_path, port, "missed_after_s = 0\n")
    site = await add_site(kernel)
    chat = await open_chat(client, site)
    conv = chat.conversation_id
    for who, peer, text in (("v", chat.visitor, "Where is order 42?"),
                            ("a", chat.agent, "It ships today."),
                            ("v", chat.visitor, "Thanks!")):  # fmt: skip
        await peer.send(op="send", conversation_id=conv, cid=f"{who}-{text}", text=text)
        await peer.expect("ack", cid=f"{who}-{text}")
    auth = {"Authorization": f"Bearer {chat.visitor_token}"}
    resp = await client.post(f"/v1/conversations/{conv}/transcript", json={}, headers=auth)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "no_email"
    resp = await client.post(
        f"/v1/conversations/{conv}/transcript", json={"email": "me@example.com"}, headers=auth
    )
    assert resp.status == 202, await resp.text()
    assert (await resp.json()) == {"to": "me@example.com", "messages": 3}
    await inbox.wait(1)
    ((_, rcpt, message),) = inbox.messages
    assert rcpt == ["me@example.com"]
    assert message["Subject"] == f"Your conversation with {site.site.name}"
    body = message.get_content()
    lines = [line.split("] ", 1)[1] for line in body.splitlines() if line.startswith("[")]
    assert lines == ["You: Where is order 42?", "Bob: It ships today.", "You: Thanks!"]
    # another visitor may not have it sent
    stranger = await visitor_session(client, site.site.widget_key)
    resp = await client.post(
        f"/v1/conversations/{conv}/transcript", json={"email": "x@example.com"},
        headers={"Authorization": f"Bearer {stranger['token']}"},
    )  # fmt: skip
    assert resp.status in (403, 404)
