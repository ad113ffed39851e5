"""The widget, the console and the admin pages in a real browser (Debian's Chromium driven by
Playwright): chat both ways, a cut connection with nothing lost or doubled, escaping, a widget
on another origin with the long-poll fallback, screenshots under build/screenshots/."""

from __future__ import annotations

import asyncio
import re
import secrets
import struct
import time
import zlib

import pytest
import pytest_asyncio

from kefu.core.domain import Visitor, new_id
from tests.chat_support import add_owner, add_site
from tests.rest_support import add_conversation
from tests.web_support import (
    chromium,
    console_say,
    expect,
    open_conversation,
    open_widget,
    screenshot_path,
    signed_in_agent,
    start_kefu,
    start_shop,
    visitor_page,
    widget_say,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

WEB_CONFIG = '[web]\ndemo_site = "shop"\n'


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def kefu(tmp_path_factory):
    running = await start_kefu(tmp_path_factory.mktemp("web-ui"), WEB_CONFIG)
    shop_runner, shop_base = await start_shop(running.base)
    running.shop_base = shop_base
    yield running
    await shop_runner.cleanup()
    await running.runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser():
    async with chromium() as launched:
        yield launched


async def new_site(kefu, site_id: str | None = None):
    return await add_site(kefu.kernel, site_id or f"s-{secrets.token_hex(3)}")


def tiny_png() -> bytes:
    """A real 2x1 PNG (uploads are sniffed by content)."""
    rows = b"\x00\xff\x00\x00\x00\x00\xff"  # one filter byte, two RGB pixels

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 2, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def stored_status(kefu, site_id: str, agent_id: str, wanted: str) -> None:
    """Wait until the routing plugin has stored the agent's presence."""
    for _ in range(100):
        if (await kefu.kernel.storage.get_agent(site_id, agent_id)).status == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"agent {agent_id} never became {wanted}")


def widget(page):
    return page.locator("#kefu-widget")


async def test_visitor_and_agent_chat_both_ways_and_text_stays_text(kefu, browser):
    shop = await new_site(kefu, "shop")
    agent = await signed_in_agent(browser, kefu.base, "shop", shop.agent.email)
    visitor = await visitor_page(browser, kefu.base)  # the demo page at /
    await open_widget(visitor)
    hostile = 'Hi <script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> & co'
    await widget_say(visitor, hostile)
    await expect(widget(visitor).locator(".msg.mine[data-seq='1'] .text")).to_have_text(hostile)

    await open_conversation(agent)
    await expect(agent.locator("#message-list .msg.theirs .text")).to_have_text(hostile)
    assert await agent.locator("#message-list img").count() == 0
    assert await agent.evaluate("window.__pwned") is None
    assert await visitor.evaluate("window.__pwned") is None

    # typing shows on the other side, then the reply arrives and is read
    await agent.locator("#composer-text").press_sequentially("Hel")
    await expect(widget(visitor).locator(".typing")).to_be_visible()
    await console_say(agent, "Hello! How can I help?")
    await expect(widget(visitor).locator(".msg.theirs:not(.notice) .text")).to_have_text(
        "Hello! How can I help?"
    )
    await expect(agent.locator("#message-list .msg.mine.read")).to_have_count(1)
    await expect(agent.locator('#chat-actions [data-action="accept"]')).to_have_count(0)  # answered
    await widget_say(visitor, "Is the Yixing pot in stock?")
    await expect(agent.locator("#message-list .msg.theirs .text").nth(1)).to_have_text(
        "Is the Yixing pot in stock?"
    )
    await expect(agent.locator("#visitor-panel dd").first).to_be_visible()
    await visitor.screenshot(path=screenshot_path("widget.png"))
    await agent.screenshot(path=screenshot_path("console.png"))
    assert visitor.errors.errors == [] and agent.errors.errors == []
    await agent.context.close()
    await visitor.context.close()


async def test_cut_connection_loses_and_doubles_nothing(kefu, browser):
    site = await new_site(kefu)
    agent = await signed_in_agent(browser, kefu.base, site.site.id, site.agent.email)
    visitor = await visitor_page(browser, f"{kefu.shop_base}shop/{site.site.widget_key}")
    await open_widget(visitor)
    await widget_say(visitor, "v1")
    conversation_id = await open_conversation(agent)
    await console_say(agent, "a1")
    await expect(widget(visitor).locator(".msg.theirs:not(.notice)")).to_have_count(1)

    await visitor.context.set_offline(True)
    await expect(widget(visitor).locator(".status")).to_be_visible()  # "Reconnecting…"
    for text in ("a2", "a3", "a4"):
        await console_say(agent, text)
    await widget_say(visitor, "v2")  # typed while offline: kept and sent after the reconnect
    await widget_say(visitor, "v3")
    await expect(agent.locator("#message-list .msg.mine:not([data-seq=''])")).to_have_count(4)
    await asyncio.sleep(0.3)
    await visitor.context.set_offline(False)

    texts = widget(visitor).locator(".msg:not(.notice) .text")
    await expect(texts).to_have_text(["v1", "a1", "a2", "a3", "a4", "v2", "v3"])
    await expect(widget(visitor).locator(".msg.mine[data-seq='']")).to_have_count(0)
    await expect(agent.locator("#message-list .msg .text")).to_have_text(
        ["v1", "a1", "a2", "a3", "a4", "v2", "v3"]
    )
    stored = await kefu.kernel.storage.list_messages(site.site.id, conversation_id, after_seq=0)
    assert [m.text for m in stored] == ["v1", "a1", "a2", "a3", "a4", "v2", "v3"]
    assert [m.seq for m in stored] == list(range(1, 8))
    seqs = (
        await widget(visitor)
        .locator(".msg:not(.notice)")
        .evaluate_all("els => els.map(e => e.dataset.seq)")
    )
    assert seqs == [str(n) for n in range(1, 8)]

    # with the panel closed, a new message shows as an unread badge and flashes the title
    await widget(visitor).locator(".launcher").click()
    await console_say(agent, "a5")
    await expect(widget(visitor).locator(".badge")).to_have_text("1")
    await expect(visitor).to_have_title(re.compile(r"^\(1\) "))
    await widget(visitor).locator(".launcher").click()
    await expect(widget(visitor).locator(".badge")).to_be_hidden()
    assert visitor.errors.errors == [] and agent.errors.errors == []
    await agent.context.close()
    await visitor.context.close()


async def test_widget_on_another_origin_with_long_poll_fallback(kefu, browser):
    site = await new_site(kefu)
    agent = await signed_in_agent(browser, kefu.base, site.site.id, site.agent.email)
    url = f"{kefu.shop_base}shop/{site.site.widget_key}?lang=zh"
    visitor = await visitor_page(browser, url)

    async def refuse(ws):  # this network lets no WebSocket through
        await ws.close(code=1011)

    await visitor.route_web_socket(re.compile(r".*/v1/ws.*"), refuse)
    await visitor.reload()
    await open_widget(visitor)
    await expect(widget(visitor).locator(".composer .send")).to_have_text("发送")
    await widget_say(visitor, "你好 我想问一下运费")
    await expect(widget(visitor).locator(".msg.mine[data-seq='1']")).to_be_visible(timeout=10000)
    polling = [c for c in kefu.kernel.gateway.registry if c.principal.kind == "visitor"]
    assert {c.transport for c in polling if c.principal.site_id == site.site.id} == {"longpoll"}

    await open_conversation(agent)
    await expect(agent.locator("#message-list .msg.theirs .text")).to_have_text(
        "你好 我想问一下运费"
    )
    await console_say(agent, "Shipping is free over ¥300.")
    await expect(widget(visitor).locator(".msg.theirs:not(.notice) .text")).to_have_text(
        "Shipping is free over ¥300."
    )
    # an image: uploaded cross-origin, sent, shown on both sides
    picture = {"name": "pot.png", "mimeType": "image/png", "buffer": tiny_png()}
    await widget(visitor).locator("input.file").set_input_files(picture)
    sent = widget(visitor).locator(".msg.mine[data-seq='3'] img.image")
    await expect(sent).to_be_visible()
    received = agent.locator("#message-list img.image")
    await expect(received).to_be_visible()
    for page, image in ((visitor, sent), (agent, received)):  # really loaded, with its token
        loaded = "img => img.complete && img.naturalWidth === 2"
        await page.wait_for_function(loaded, arg=await image.element_handle(), timeout=5000)
    assert visitor.errors.errors == [] and agent.errors.errors == []
    await agent.context.close()
    await visitor.context.close()


async def test_transfer_moves_the_chat_to_a_second_agent(kefu, browser):
    site = await new_site(kefu)
    bob = await signed_in_agent(browser, kefu.base, site.site.id, site.agent.email)
    visitor = await visitor_page(browser, f"{kefu.shop_base}shop/{site.site.widget_key}")
    await open_widget(visitor)
    await widget_say(visitor, "I need a refund for order 1182")
    conversation_id = await open_conversation(bob)  # routing gave it to Bob, the one online
    await expect(widget(visitor).locator(".notice")).to_have_text("Bob joined the chat.")
    await console_say(bob, "Let me hand you to billing.")
    await expect(widget(visitor).locator(".msg.theirs:not(.notice) .text")).to_have_count(1)

    ada = await signed_in_agent(browser, kefu.base, site.site.id, site.admin.email)
    await stored_status(kefu, site.site.id, site.admin.id, "online")
    await bob.locator('#chat-actions [data-action="transfer"]').click()
    await bob.locator("#transfer-panel select").select_option(f"agent:{site.admin.id}")
    await bob.locator("#transfer-panel textarea").fill("refund of order 1182")
    await bob.locator('#transfer-panel button[type="submit"]').click()
    await expect(bob.locator('.tabs [data-count="mine"]')).to_have_text("")

    await expect(ada.locator('.tabs [data-count="mine"]')).to_have_text("1")
    assert await open_conversation(ada) == conversation_id
    await expect(ada.locator("#handover")).to_have_text(
        "Handed over with a note: refund of order 1182"
    )
    await expect(ada.locator("#message-list .msg .text")).to_have_count(2)  # the history
    await console_say(ada, "Hi, Ada from billing here. Refund on its way.")
    await expect(widget(visitor).locator(".msg.theirs:not(.notice) .text").last).to_have_text(
        "Hi, Ada from billing here. Refund on its way."
    )
    await expect(widget(visitor).locator(".notice").last).to_have_text("Ada joined the chat.")
    stored = await kefu.kernel.storage.get_conversation(site.site.id, conversation_id)
    assert stored.assignee_id == site.admin.id and stored.state == "assigned"

    # Ada resolves; the visitor is asked for a rating
    await ada.locator('#chat-actions [data-action="resolve"]').click()
    await expect(widget(visitor).locator(".ended .stars")).to_be_visible()
    assert bob.errors.errors == [] and ada.errors.errors == [] and visitor.errors.errors == []
    for page in (bob, ada, visitor):
        await page.context.close()


async def test_canned_replies_notes_tags_and_rating(kefu, browser):
    site = await new_site(kefu)
    ada = await signed_in_agent(browser, kefu.base, site.site.id, site.admin.email)
    await ada.goto(f"{kefu.base}admin/canned")
    await ada.fill("#canned-form input[name=shortcut]", "ship")
    await ada.fill(
        "#canned-form textarea[name=text]", "Shipping takes 2 days, {visitor.name|friend}."
    )
    await ada.locator("#canned-form button[type=submit]").click()
    await expect(ada.locator("#canned-rows")).to_contain_text("/ship")
    await ada.goto(f"{kefu.base}console")
    await ada.locator("#conn-state.ws").wait_for()

    visitor = await visitor_page(browser, f"{kefu.shop_base}shop/{site.site.widget_key}")
    await open_widget(visitor)
    await widget_say(visitor, "How long is shipping?")
    await open_conversation(ada)
    box = ada.locator("#composer-text")
    await box.fill("/sh")
    await box.dispatch_event("input")
    await expect(ada.locator("#canned li")).to_have_count(1)
    await expect(ada.locator("#canned li")).to_contain_text("Shipping takes 2 days")
    await box.press("Enter")  # completes the shortcut
    await expect(box).to_have_value("/ship")
    await box.press("Enter")  # sends it: the server sends the reply, placeholders filled in
    reply = widget(visitor).locator(".msg.theirs:not(.notice) .text")
    await expect(reply).to_have_text("Shipping takes 2 days, friend.")
    await expect(ada.locator("#message-list .msg.mine .text")).to_have_text(
        "Shipping takes 2 days, friend."
    )

    await ada.fill("#annotations .tag-form input", "shipping")
    await ada.locator("#annotations .tag-form button").click()
    await expect(ada.locator("#annotations .tag")).to_contain_text("shipping")
    await ada.fill("#annotations .note-form textarea", "asked about <b>shipping</b>")
    await ada.locator("#annotations .note-form button").click()
    await expect(ada.locator("#annotations .notes li p")).to_have_text(
        "asked about <b>shipping</b>"
    )
    await expect(widget(visitor).locator(".msg")).to_have_count(3)  # notes never reach visitors

    await ada.locator('#chat-actions [data-action="resolve"]').click()
    await widget(visitor).locator('.stars [data-score="4"]').click()
    await widget(visitor).locator(".ended .rate").click()
    await expect(widget(visitor).locator(".ended .thanks")).to_be_visible()
    conversation = (await kefu.kernel.storage.list_conversations(site.site.id))[0]
    assert conversation.tags == ["shipping"] and conversation.meta["rating"]["score"] == 4
    assert ada.errors.errors == [] and visitor.errors.errors == []
    await ada.context.close()
    await visitor.context.close()


async def test_console_pages_back_through_long_histories(kefu, browser):
    site = await new_site(kefu)
    storage = kefu.kernel.storage
    visitor = await storage.upsert_visitor(Visitor(new_id(), site.site.id, name="Long talker"))
    await add_conversation(kefu.kernel, site.site.id, visitor.id, messages=75, at=time.time())
    agent = await signed_in_agent(browser, kefu.base, site.site.id, site.agent.email)
    await open_conversation(agent)
    texts = agent.locator("#message-list .msg .text")
    await expect(texts).to_have_count(50)
    await expect(texts.first).to_have_text("m26")
    await agent.locator("#older").click()
    await expect(texts).to_have_count(75)
    await expect(texts.first).to_have_text("m1")
    await expect(agent.locator("#older")).to_be_hidden()
    await expect(agent.locator("#visitor-panel h2")).to_have_text("Long talker")
    assert agent.errors.errors == []
    await agent.context.close()


async def test_queue_position_and_wait_reach_the_widget(kefu, browser):
    site = await new_site(kefu)
    site.agent.capacity = 1
    await kefu.kernel.storage.update_agent(site.agent)
    agent = await signed_in_agent(browser, kefu.base, site.site.id, site.agent.email)
    shop = f"{kefu.shop_base}shop/{site.site.widget_key}"
    first, second = await visitor_page(browser, shop), await visitor_page(browser, shop)
    await open_widget(first)
    await widget_say(first, "first in line")
    await expect(widget(first).locator(".notice")).to_have_text("Bob joined the chat.")
    await open_widget(second)
    await widget_say(second, "second in line")
    banner = widget(second).locator(".queue")
    await expect(banner).to_contain_text("You are number 1 in line. Estimated wait:")
    await agent.locator('.tabs [data-tab="mine"]').click()
    await agent.locator("#conversation-list li[data-id]").first.click()
    await agent.locator('#chat-actions [data-action="resolve"]').click()
    await expect(banner).to_be_hidden()  # the freed slot goes to the second visitor
    await expect(widget(second).locator(".notice")).to_have_text("Bob joined the chat.")
    for page in (agent, first, second):
        assert page.errors.errors == []
        await page.context.close()


async def test_offline_site_offers_leave_a_message(kefu, browser):
    site = await new_site(kefu)  # nobody signed in: the site is offline
    visitor = await visitor_page(browser, f"{kefu.shop_base}shop/{site.site.widget_key}")
    await widget(visitor).locator(".launcher").click()
    form = widget(visitor).locator("form.offline")
    await expect(form).to_be_visible()
    await expect(widget(visitor).locator(".composer")).to_be_hidden()
    await form.locator("input[name=name]").fill("Mei")
    await form.locator("input[name=email]").fill("mei@example.com")
    await form.locator("textarea[name=message]").fill("Do you ship to Hangzhou?")
    await form.locator("button[type=submit]").click()
    await expect(widget(visitor).locator(".msg.mine[data-seq='1']")).to_be_visible()
    await expect(widget(visitor).locator(".notice")).to_contain_text("We got your message")
    # one notice, not a "busy or away" line contradicting it; the form is gone and emptied
    await expect(widget(visitor).locator(".queue")).to_be_hidden()
    await expect(form).to_be_hidden()
    assert await form.locator("textarea[name=message]").input_value() == ""
    storage = kefu.kernel.storage
    (conversation,) = await storage.list_conversations(site.site.id)
    (message,) = await storage.list_messages(site.site.id, conversation.id, after_seq=0)
    visitor_record = await storage.get_visitor(site.site.id, conversation.visitor_id)
    assert message.text == "Do you ship to Hangzhou?" and visitor_record.name == "Mei"
    assert visitor_record.attributes["email"] == "mei@example.com"
    assert visitor.errors.errors == []
    await visitor.context.close()


async def test_admin_status_page_shows_live_figures(kefu, browser):
    site = await new_site(kefu)
    admin = await signed_in_agent(browser, kefu.base, site.site.id, site.admin.email)
    visitor = await visitor_page(browser, f"{kefu.shop_base}shop/{site.site.widget_key}")
    await open_widget(visitor)
    await widget_say(visitor, "hello from the status test")
    await admin.goto(f"{kefu.base}admin/status")
    await expect(admin.locator('[data-stat="connections.visitors"]')).to_have_text("1")
    await expect(admin.locator('[data-stat="messages.total_since_start"]')).to_have_text("1")
    await admin.screenshot(path=screenshot_path("admin-status.png"))
    await admin.goto(f"{kefu.base}admin/sites")
    await expect(admin.locator("#snippet")).to_contain_text(site.site.widget_key)
    # business hours: closed every day, saved through the routing plugin's REST endpoint
    await admin.goto(f"{kefu.base}admin/hours")
    await admin.fill("#hours-form input[name=timezone]", "Asia/Shanghai")
    await admin.locator("#hours-form button[type=submit]").click()
    await expect(admin.locator("#open-now")).to_have_text("closed")
    assert (await kefu.kernel.storage.get_site(site.site.id)).settings["business_hours"]
    await admin.locator("#hours-reset").click()
    await expect(admin.locator("#open-now")).to_have_text("open")
    # install-wide plugin settings are for owners (issue 13, hole 11)
    assert await admin.locator('nav a[href="/admin/plugins"]').count() == 0
    owner = await add_owner(kefu.kernel, site.site.id)
    owner_page = await signed_in_agent(browser, kefu.base, site.site.id, owner.email)
    await owner_page.goto(f"{kefu.base}admin/plugins")
    await expect(owner_page.locator("table.grid")).to_contain_text("web")
    await owner_page.context.close()
    assert admin.errors.errors == [] and visitor.errors.errors == []
    await admin.context.close()
    await visitor.context.close()
