"""A site a bot serves, with no agent online, in a real browser (Debian's Chromium driven by
Playwright): the widget opens the chat with the bot (not the leave-a-message form), the bot
answers, and after its handoff, with still nobody online, the visitor gets the form and the
message lands in the handed-off conversation. A site on the same server without a bot shows
the form at once (`kefu_bot_serves` is asked per site)."""

from __future__ import annotations

import aiohttp
import pytest
import pytest_asyncio

from kefu.core.domain import QUEUED
from kefu.plugins.bot_intents import service_of as bot_of
from tests.chat_support import add_site
from tests.web_support import (
    Frames,
    chromium,
    expect,
    open_widget,
    start_kefu,
    start_shop,
    visitor_page,
    widget_say,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

BOT_SITE = "bot-shop"
FLOW = f"""\
dsl: 1
id: helpdesk
sites: [{BOT_SITE}]
start: welcome
states:
  welcome:
    say: {{en: "Hi, I am the shop's bot. Ask me about our opening hours.",
          zh: "您好! 我是店铺机器人, 可以告诉您营业时间。"}}
    next: menu
  menu:
    on:
      - keyword: [hours, open, 营业]
        goto: hours
      - keyword: [human, agent, 人工]
        say: "Let me find a colleague for you."
        handoff: {{department: support, reason: visitor asked for a human}}
  hours:
    say: "We are open every day from 9:00 to 21:00."
    next: menu
"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def kefu(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bot-offline")
    flow = folder / "helpdesk.yaml"
    flow.write_text(FLOW, encoding="utf-8")
    running = await start_kefu(folder, f'[bot]\nflows = ["{flow}"]\nwatch = false\n')
    shop_runner, shop_base = await start_shop(running.base)
    running.shop_base = shop_base
    assert bot_of(running.kernel).registry.for_site(BOT_SITE) is not None
    yield running
    await shop_runner.cleanup()
    await running.runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser():
    async with chromium() as launched:
        yield launched


async def widget_config(kefu, widget_key: str) -> dict:
    async with aiohttp.ClientSession() as http:
        url = f"{kefu.base}v1/widget/config?key={widget_key}"
        async with http.get(url) as resp:
            assert resp.status == 200
            return await resp.json()


async def test_bot_answers_with_nobody_online_then_the_handoff_offers_the_form(kefu, browser):
    site = await add_site(kefu.kernel, BOT_SITE)  # its agents never sign in: offline
    config = await widget_config(kefu, site.site.widget_key)
    assert config["online"] is False and config["agents_online"] == 0
    assert config["bot"] is True
    visitor = await visitor_page(browser, f"{kefu.shop_base}shop/{site.site.widget_key}")
    frames = Frames(visitor)
    chat = visitor.locator("#kefu-widget")
    await open_widget(visitor)  # the composer, not the offline form
    await expect(chat.locator("form.offline")).to_be_hidden()
    await widget_say(visitor, "when are you open?")
    bot_texts = chat.locator(".msg.theirs:not(.notice) .text")
    await expect(bot_texts.last).to_have_text("We are open every day from 9:00 to 21:00.")
    await expect(bot_texts.first).to_have_text(
        "Hi, I am the shop's bot. Ask me about our opening hours."
    )
    await expect(chat.locator("form.offline")).to_be_hidden()

    # the bot hands off; nobody can take it: the queue frame brings the form
    await widget_say(visitor, "a human please")
    await expect(bot_texts.last).to_have_text("Let me find a colleague for you.")
    form = chat.locator("form.offline")
    await expect(form).to_be_visible()
    await expect(chat.locator(".composer")).to_be_hidden()
    await expect(chat.locator(".queue")).to_contain_text("agents are busy or away")
    await form.locator("input[name=name]").fill("Li Lei")
    await form.locator("input[name=email]").fill("lilei@example.com")
    await form.locator("textarea[name=message]").fill("Please call me about order 123456.")
    await form.locator("button[type=submit]").click()
    await expect(chat.locator(".notice")).to_contain_text("We got your message")
    # then the form is gone and emptied, with no "agents are busy" line contradicting the
    # notice, even after the next "nobody can answer" queue frame
    await frames.next("queue", within_ms=3000)
    await expect(form).to_be_hidden()
    await expect(chat.locator(".queue")).to_be_hidden()
    assert await form.locator("textarea[name=message]").input_value() == ""
    await expect(chat.locator(".composer")).to_be_visible()

    storage = kefu.kernel.storage
    (conversation,) = await storage.list_conversations(site.site.id)  # the same one
    # nobody serves "support": queued for any agent instead of waiting forever (docs/bot.md)
    assert conversation.state == QUEUED and conversation.department is None
    assert conversation.meta["requested_department"] == "support"
    assert conversation.meta["bot_handoff"]["reason"] == "visitor asked for a human"
    assert conversation.meta["offline"]["text"] == "Please call me about order 123456."
    messages = await storage.list_messages(site.site.id, conversation.id, after_seq=0)
    said = [m.text for m in messages if m.sender_kind == "visitor"]
    assert said == ["when are you open?", "a human please", "Please call me about order 123456."]
    # the greeting races the first message (the widget starts the chat with it)
    assert [m.text for m in messages if m.sender_kind == "bot"][-2:] == [
        "We are open every day from 9:00 to 21:00.",
        "Let me find a colleague for you.",
    ]
    assert messages[-1].meta == {"offline": True}
    assert visitor.errors.errors == []
    await visitor.context.close()


async def test_a_site_without_a_bot_still_offers_the_form(kefu, browser):
    site = await add_site(kefu.kernel, "plain-shop")  # the flow serves only BOT_SITE
    config = await widget_config(kefu, site.site.widget_key)
    assert config["online"] is False and config["bot"] is False
    visitor = await visitor_page(browser, f"{kefu.shop_base}shop/{site.site.widget_key}")
    await visitor.locator("#kefu-widget .launcher").click()
    await expect(visitor.locator("#kefu-widget form.offline")).to_be_visible()
    await expect(visitor.locator("#kefu-widget .composer")).to_be_hidden()
    assert await kefu.kernel.storage.list_conversations(site.site.id) == []
    assert visitor.errors.errors == []
    await visitor.context.close()
