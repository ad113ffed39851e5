"""Unread counts kept by the server (issue 14): the console's badges and page title survive a
reload and show on the agent's second device, in the real browser (Debian's Chromium under
Playwright)."""

from __future__ import annotations

import re

import pytest
import pytest_asyncio

from kefu.core.domain import Conversation, Message, Visitor, new_id
from tests.chat_support import add_site
from tests.web_support import chromium, expect, screenshot_path, signed_in_agent, start_kefu

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]

COUNTED = re.compile(r"^\(\d+\) ")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def kefu(tmp_path_factory):
    running = await start_kefu(tmp_path_factory.mktemp("unread-ui"))
    yield running
    await running.runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser():
    async with chromium() as launched:
        yield launched


async def held_chat(kernel, site_id: str, agent_id: str, name: str, text: str) -> Conversation:
    """A conversation assigned to the agent with one visitor message."""
    visitor = await kernel.storage.upsert_visitor(Visitor(new_id(), site_id, name=name))
    conv = await kernel.storage.create_conversation(
        Conversation(new_id(), site_id, visitor.id, state="assigned", assignee_id=agent_id)
    )
    await kernel.storage.append_message(
        Message(site_id, conv.id, new_id(), "visitor", visitor.id, text=text)
    )
    return conv


def badge(page, conversation_id: str):
    return page.locator(f'#conversation-list li[data-id="{conversation_id}"] .badge')


async def open_and_mark(page, conversation_id: str) -> None:
    """Click a conversation and wait until its read mark is stored."""
    async with page.expect_response(
        lambda r: r.url.endswith(f"/v1/conversations/{conversation_id}/read") and r.ok
    ):
        await page.locator(f'#conversation-list li[data-id="{conversation_id}"]').click()


async def test_unread_badges_and_title_survive_a_reload_and_reach_a_second_device(kefu, browser):
    site = await add_site(kefu.kernel)
    sid, bob = site.site.id, site.agent
    anna = await held_chat(kefu.kernel, sid, bob.id, "Anna", "Is my order on its way?")
    ben = await held_chat(kefu.kernel, sid, bob.id, "Ben", "Do you ship to Lyon?")

    page = await signed_in_agent(browser, kefu.base, sid, bob.email)
    await page.locator('.tabs [data-tab="mine"]').click()
    # never read: both count, from the server's marks (none yet)
    await expect(badge(page, anna.id)).to_have_text("1")
    await expect(badge(page, ben.id)).to_have_text("1")
    await expect(page).to_have_title(re.compile(r"^\(2\) "))
    await open_and_mark(page, anna.id)
    await expect(badge(page, anna.id)).to_have_count(0)
    await open_and_mark(page, ben.id)
    await expect(page).not_to_have_title(COUNTED)

    # a message for Anna's chat while Ben's is on screen
    conversation = await kefu.kernel.delivery.conversation(sid, anna.id)
    await kefu.kernel.delivery.deliver(
        conversation, Message(sid, anna.id, new_id(), "visitor", anna.visitor_id, text="Hello?")
    )
    await expect(badge(page, anna.id)).to_have_text("1")
    await expect(page).to_have_title(re.compile(r"^\(1\) "))

    # a reload keeps it (Ben's chat opens again from the deep link and stays read)
    await page.reload()
    await page.locator("#chat-inner:not([hidden])").wait_for()
    await expect(badge(page, anna.id)).to_have_text("1")
    await expect(badge(page, ben.id)).to_have_count(0)
    await expect(page).to_have_title(re.compile(r"^\(1\) "))

    # the same agent on a second device sees the same count, and reads it there
    other = await signed_in_agent(browser, kefu.base, sid, bob.email)
    await expect(other).to_have_title(re.compile(r"^\(1\) "))
    await other.locator('.tabs [data-tab="mine"]').click()
    await expect(badge(other, anna.id)).to_have_text("1")
    await expect(badge(other, ben.id)).to_have_count(0)
    await other.screenshot(path=screenshot_path("console-unread.png"))
    await open_and_mark(other, anna.id)
    await expect(other).not_to_have_title(COUNTED)

    # ... which the first device shows after its next reload
    await page.reload()
    await page.locator("#chat-inner:not([hidden])").wait_for()
    await expect(page.locator("#conversation-list li[data-id]")).to_have_count(2)
    await expect(page.locator("#conversation-list .badge")).to_have_count(0)
    await expect(page).not_to_have_title(COUNTED)
    for p in (page, other):
        assert p.errors.errors == []
    await page.context.close()
    await other.context.close()
