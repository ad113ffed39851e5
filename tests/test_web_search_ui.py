"""The console's search, filters, saved views, deep links, unread counts and shortcuts
(issue 14), in the real browser (Debian's Chromium under Playwright)."""

from __future__ import annotations

import re

import pytest
import pytest_asyncio

from kefu.core.domain import Conversation, Message, Visitor, new_id
from tests.chat_support import add_site
from tests.web_support import chromium, expect, screenshot_path, signed_in_agent, start_kefu

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def kefu(tmp_path_factory):
    running = await start_kefu(tmp_path_factory.mktemp("search-ui"))
    yield running
    await running.runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser():
    async with chromium() as launched:
        yield launched


async def chat(kernel, site_id: str, name: str, texts: list[str], **kw) -> Conversation:
    visitor = await kernel.storage.upsert_visitor(Visitor(new_id(), site_id, name=name))
    conv = await kernel.storage.create_conversation(
        Conversation(new_id(), site_id, visitor.id, **kw)
    )
    for text in texts:
        await kernel.storage.append_message(
            Message(site_id, conv.id, new_id(), "visitor", visitor.id, text=text)
        )
    return conv


async def test_search_filter_deep_link_unread_and_shortcuts(kefu, browser):
    site = await add_site(kefu.kernel)
    sid = site.site.id
    # assigned to the agent (routing leaves them alone): the "All open" tab
    held = {"state": "assigned", "assignee_id": site.agent.id}
    parcel = await chat(kefu.kernel, sid, "Paula", ["Where is parcel 8812?"], tags=["vip"], **held)
    await chat(kefu.kernel, sid, "Quentin", ["我的订单在哪里"], **held)
    page = await signed_in_agent(browser, kefu.base, sid, site.agent.email)
    items = page.locator("#conversation-list li[data-id]")
    await page.keyboard.press("3")
    await expect(page.locator('.tabs [data-tab="open"]')).to_have_attribute("aria-selected", "true")
    await expect(items).to_have_count(2)

    # search: a word of a message narrows the list, its snippet is the preview
    await page.keyboard.press("/")
    await expect(page.locator("#search")).to_be_focused()
    await page.keyboard.type("8812")
    await expect(items).to_have_count(1)
    await expect(items.first).to_have_attribute("data-id", parcel.id)
    await expect(items.first.locator(".preview")).to_contain_text("parcel 8812")
    await expect(page).to_have_url(re.compile(r"#.*q=8812"))
    await page.fill("#search", "订单")  # Chinese, no spaces
    await expect(items.first.locator(".preview")).to_contain_text("我的订单")
    await page.keyboard.press("Escape")
    await expect(items).to_have_count(2)

    # a filter, saved as a view, applied again after clearing
    await page.locator(".finder details summary").click()
    await page.fill("#filter-tag", "vip")
    await expect(items).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept("VIP only"))
    await page.click("#save-view")
    await expect(page.locator("#finder-status")).to_have_text("View saved")
    await page.click("#clear-filters")
    await expect(items).to_have_count(2)
    await page.select_option("#saved-views", "vip-only")
    await expect(items).to_have_count(1)
    await page.click("#clear-filters")

    # deep link: open with j, reload, the same conversation is open again
    await page.locator("body").click(position={"x": 600, "y": 5})
    await page.keyboard.press("j")
    await page.locator("#chat-inner:not([hidden])").wait_for()
    opened = await page.locator("#conversation-list li.active").get_attribute("data-id")
    await expect(page).to_have_url(re.compile(rf"#.*c={re.escape(opened)}"))
    await page.reload()
    await page.locator("#chat-inner:not([hidden])").wait_for()
    await expect(page.locator("#message-list .msg").first).to_be_visible()
    assert f"c={opened}" in page.url

    # unread: the other conversation (never opened) counts its message in its row and the
    # title, and a new visitor message adds one (tests/test_web_unread.py: across reloads)
    other_conv = next(
        i for i in await items.evaluate_all("els => els.map(e => e.dataset.id)") if i != opened
    )
    other_badge = page.locator(f'#conversation-list li[data-id="{other_conv}"] .badge')
    await expect(other_badge).to_have_text("1")
    await expect(page).to_have_title(re.compile(r"^\(1\) "))
    conversation = await kefu.kernel.delivery.conversation(sid, other_conv)
    await kefu.kernel.delivery.deliver(
        conversation,
        Message(sid, other_conv, new_id(), "visitor", conversation.visitor_id, text="hi again"),
    )
    await expect(other_badge).to_have_text("2")
    await expect(page).to_have_title(re.compile(r"^\(2\) "))

    # ? shows the shortcuts
    await page.locator("body").click(position={"x": 600, "y": 5})
    await page.keyboard.press("?")
    await expect(page.locator("#shortcuts")).to_be_visible()
    await page.screenshot(path=screenshot_path("console-search.png"))
    await page.keyboard.press("Escape")
    await expect(page.locator("#shortcuts")).to_be_hidden()
    assert page.errors.errors == []
    await page.context.close()
