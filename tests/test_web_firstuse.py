"""What broke on a new user's first minutes (issue 14), each in the real browser (Debian's
Chromium under Playwright): the widget follows availability live, every message names who
wrote it (after reloads and transfers too), the first agent cannot post after a transfer,
canned replies added in Admin reach an open console, an anonymous visitor's placeholders,
the rating shows in the console, and a failed Take says why."""

from __future__ import annotations

import time

import pytest
import pytest_asyncio

from kefu.core.domain import Agent, Conversation, Visitor, new_id
from tests.chat_support import FAST_HASH, add_site
from tests.web_support import (
    Frames,
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


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def kefu(tmp_path_factory):
    running = await start_kefu(tmp_path_factory.mktemp("first-use"))
    shop_runner, shop_base = await start_shop(running.base)
    running.shop_base = shop_base
    yield running
    await shop_runner.cleanup()
    await running.runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser():
    async with chromium() as launched:
        yield launched


def widget(page):
    return page.locator("#kefu-widget")


async def shop_visitor(kefu, browser, site):
    return await visitor_page(browser, f"{kefu.shop_base}shop/{site.site.widget_key}")


async def test_widget_follows_availability_without_a_reload(kefu, browser):
    site = await add_site(kefu.kernel)
    visitor = await shop_visitor(kefu, browser, site)
    await widget(visitor).locator(".launcher").click()
    await expect(widget(visitor).locator("form.offline")).to_be_visible()  # nobody online

    bob = await signed_in_agent(browser, kefu.base, site.site.id, site.agent.email)
    # the open panel swaps the form for the chat once Bob is online, no reload
    await expect(widget(visitor).locator(".composer textarea")).to_be_visible(timeout=10000)
    await expect(widget(visitor).locator("form.offline")).to_be_hidden()
    # closed and opened again: still the chat
    await widget(visitor).locator(".launcher").click()
    await widget(visitor).locator(".launcher").click()
    await expect(widget(visitor).locator(".composer textarea")).to_be_visible()
    await widget_say(visitor, "Are you there?")
    await open_conversation(bob)
    await expect(bob.locator("#message-list .msg.theirs .text")).to_have_text("Are you there?")

    assert visitor.errors.errors == [] and bob.errors.errors == []
    await visitor.context.close()
    await bob.context.close()


async def test_messages_name_their_author_after_reloads_and_transfers(kefu, browser):
    site = await add_site(kefu.kernel)
    carl = Agent(new_id(), site.site.id, f"carl@{site.site.id}.test", "Carl", FAST_HASH)
    await kefu.kernel.storage.create_agent(carl)
    bob = await signed_in_agent(browser, kefu.base, site.site.id, site.agent.email)
    visitor = await shop_visitor(kefu, browser, site)
    await open_widget(visitor)
    await widget_say(visitor, "Where is my parcel?")
    conversation_id = await open_conversation(bob)
    await console_say(bob, "Bob here, let me check.")
    agent_lines = widget(visitor).locator(".msg.theirs.agent")
    await expect(agent_lines.locator(".who")).to_have_text(["Bob"])

    # a colleague sees Bob's name on Bob's message, not "Agent"
    carl_page = await signed_in_agent(browser, kefu.base, site.site.id, carl.email)
    await carl_page.locator('.tabs [data-tab="open"]').click()
    await carl_page.locator(f'#conversation-list li[data-id="{conversation_id}"]').click()
    await expect(carl_page.locator("#message-list .msg.mine .who")).to_have_text(["Bob"])

    # Bob transfers to Carl: Bob's composer goes, and the server refuses his sends
    await bob.locator('#chat-actions [data-action="transfer"]').click()
    await bob.locator("#transfer-panel select").select_option(f"agent:{carl.id}")
    await bob.locator('#transfer-panel button[type="submit"]').click()
    await expect(bob.locator("#composer")).to_be_hidden()
    await expect(bob.locator("#composer-note")).to_have_text(
        "Assigned to Carl: only they can reply."
    )
    frames = Frames(bob)
    await bob.evaluate(
        """id => window.kefuConsole.client.send(
            {op: "send", conversation_id: id, cid: "late-1", type: "text", text: "late"})""",
        conversation_id,
    )
    await bob.reload()  # a fresh page: the refusal is a frame on the new connection
    await bob.locator("#conn-state.ws").wait_for()
    await bob.evaluate(
        """id => window.kefuConsole.client.send(
            {op: "send", conversation_id: id, cid: "late-2", type: "text", text: "late"})""",
        conversation_id,
    )
    refused = await frames.next("error")
    assert refused is not None and refused["code"] == "forbidden", refused
    await console_say(carl_page, "Carl here: it ships today.")

    # after a reload the widget still names both agents (and the bot would be the bot)
    await expect(agent_lines).to_have_count(2)
    await visitor.reload()
    await open_widget(visitor)
    await expect(widget(visitor).locator(".msg.theirs.agent .who")).to_have_text(["Bob", "Carl"])
    stored = await kefu.kernel.storage.list_messages(site.site.id, conversation_id, after_seq=0)
    assert "late" not in [m.text for m in stored]
    await visitor.screenshot(path=screenshot_path("widget-names.png"))
    for page in (bob, carl_page, visitor):
        assert page.errors.errors == []
        await page.context.close()


async def test_canned_reply_added_in_admin_reaches_an_open_console_and_the_rating_shows(
    kefu, browser
):
    site = await add_site(kefu.kernel)
    ada = await signed_in_agent(browser, kefu.base, site.site.id, site.admin.email)
    visitor = await shop_visitor(kefu, browser, site)  # anonymous: no name
    await open_widget(visitor)
    await widget_say(visitor, "How long is shipping?")
    await open_conversation(ada)

    admin = await ada.context.new_page()  # the console stays open in the first tab
    await admin.goto(f"{kefu.base}admin/canned")
    await admin.fill("#canned-form input[name=shortcut]", "ship")
    await admin.fill("#canned-form textarea[name=text]", "Hi {visitor.name}, it takes 2 days.")
    await admin.locator("#canned-form button[type=submit]").click()
    await expect(admin.locator("#canned-rows")).to_contain_text("/ship")
    await admin.close()

    box = ada.locator("#composer-text")
    await box.fill("/sh")
    await box.dispatch_event("input")
    await expect(ada.locator("#canned li")).to_contain_text("it takes 2 days")
    await box.press("Enter")
    await expect(box).to_have_value("/ship")
    await box.press("Enter")
    reply = widget(visitor).locator(".msg.theirs:not(.notice) .text")
    await expect(reply).to_have_text("Hi, it takes 2 days.")  # not "Hi , …"

    await ada.locator('#chat-actions [data-action="resolve"]').click()
    await widget(visitor).locator('.stars [data-score="4"]').click()
    await widget(visitor).locator(".ended textarea").fill("quick answer")
    await widget(visitor).locator(".ended .rate").click()
    # the open console shows the rating at once, in the header and in the inbox
    await expect(ada.locator("#chat-rating")).to_have_text("★★★★☆ 4/5 · quick answer")
    await ada.locator('.tabs [data-tab="resolved"]').click()
    await expect(ada.locator("#conversation-list .rating")).to_contain_text("4/5")
    await ada.screenshot(path=screenshot_path("console-rating.png"))
    assert ada.errors.errors == [] and visitor.errors.errors == []
    await ada.context.close()
    await visitor.context.close()


async def test_a_failed_take_says_why(kefu, browser):
    await take_refused(kefu, browser, {}, "waits for department 'support', which you do not serve")


async def test_a_failed_take_says_why_in_the_agents_language(kefu, browser):
    """The server sends the refusal's ``reason`` and ``params``; a Chinese console words it."""
    await take_refused(
        kefu,
        browser,
        {"locale": "zh-CN"},
        "这个对话在等待“support”部门，您不负责该部门",  # noqa: RUF001
    )


async def take_refused(kefu, browser, context_args: dict, expected: str) -> None:
    site = await add_site(kefu.kernel)
    storage = kefu.kernel.storage
    visitor = await storage.upsert_visitor(Visitor(new_id(), site.site.id, name="Wen"))
    waiting = Conversation(
        new_id(), site.site.id, visitor.id, department="support", meta={"queued_at": time.time()}
    )
    await storage.create_conversation(waiting)
    bob = await signed_in_agent(browser, kefu.base, site.site.id, site.agent.email, **context_args)
    await bob.locator(f'#conversation-list li[data-id="{waiting.id}"]').click()
    await bob.locator('#chat-actions [data-action="take"]').click()
    await expect(bob.locator("#chat-status")).to_contain_text(expected)
    assert bob.errors.errors == []
    await bob.context.close()
