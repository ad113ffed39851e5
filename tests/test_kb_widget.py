"""The knowledge base seen from the widget (issue 15's "must show"), on a real server in a
real browser (Debian's Chromium driven by Playwright), with a bot flow that knows nothing
but opening hours and the 20 help articles of tests/data/kb_articles.json:

- an English question no intent covers is answered from the article that answers it,
  with its citation, and "Did this help?" with Yes / No buttons; *Yes* is thanked;
- a question nothing answers gets the flow's fallback and is handed to a human: the
  conversation is queued, an agent in the console gets it and answers, the visitor sees it;
- a Chinese visitor (the widget in Chinese) is greeted and answered in Chinese with the
  Chinese article and its citation; *没有帮助* hands over with the Chinese reply.

Screenshots ``kb-widget-en.png``, ``kb-widget-zh.png`` (and the ``ui-*-kb-widget.jpg``
that docs/ui.md shows from docs/img/)."""

from __future__ import annotations

import asyncio

import pytest

from kefu.core.domain import BOT
from kefu.plugins.knowledge_base import KIND, library
from tests.chat_support import add_site
from tests.test_knowledge_base import ARTICLES
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

pytestmark = pytest.mark.timeout(120)

FLOW = """\
dsl: 1
id: helpdesk
sites: ["*"]
start: welcome
states:
  welcome:
    say:
      en: "Hi, I am the shop's bot. Ask me anything."
      zh: "您好！我是店铺机器人，有什么可以帮您？"
    next: menu
  menu:
    on:
      - keyword: [hours, 营业时间]
        goto: hours
  hours:
    say: {en: "We are open every day from 9:00 to 21:00.", zh: "我们每天 9:00 到 21:00 营业。"}
    next: menu
fallback:
  say: {en: "Sorry, I did not understand.", zh: "抱歉，我没有理解您的意思。"}
  max_misses: 1
  handoff: {department: support, reason: bot did not understand}
"""  # noqa: RUF001


def bot_texts(page):
    return page.locator("#kefu-widget .msg.bot .text")


async def state_of(kernel, site_id: str, wanted: str) -> str:
    """The visitor's conversation's state once it is ``wanted`` (or the last seen)."""
    state = ""
    for _ in range(100):
        (conversation,) = await kernel.storage.list_conversations(site_id)
        state = conversation.state
        if state == wanted:
            break
        await asyncio.sleep(0.1)
    return state


async def test_widget_answers_from_articles_hands_over_and_speaks_chinese(tmp_path):
    flow = tmp_path / "helpdesk.yaml"
    flow.write_text(FLOW, encoding="utf-8")
    kefu = await start_kefu(tmp_path, f'[bot]\nflows = ["{flow}"]\nwatch = false\n')
    shop_runner, shop_base = await start_shop(kefu.base)
    kernel = kefu.kernel
    try:
        site = await add_site(kernel)
        await library(kernel).warming  # jieba/pinyin tables, loaded in a thread at start
        for article in ARTICLES:
            data = {k: article[k] for k in ("title", "body", "lang")}
            await kernel.storage.put_record(site.site.id, KIND, article["id"], data)
        key = site.site.widget_key
        async with chromium() as browser:
            agent = await signed_in_agent(browser, kefu.base, site.site.id, site.agent.email)

            # English: answered from the article, with its citation; "Yes" is thanked
            visitor = await visitor_page(browser, f"{shop_base}shop/{key}?lang=en")
            await open_widget(visitor)
            await widget_say(visitor, "my headphones broke, how long is the warranty?")
            await expect(bot_texts(visitor).first).to_contain_text("Ask me anything")
            answer = bot_texts(visitor).filter(has_text="two-year warranty")
            await expect(answer).to_contain_text('(From the article: "Warranty and repairs")')
            await expect(bot_texts(visitor).last).to_have_text("Did this help?")
            buttons = visitor.locator("#kefu-widget .msg.bot .choices button")
            await expect(buttons).to_have_count(2)
            assert await buttons.all_text_contents() == ["Yes", "No"]
            await visitor.screenshot(path=screenshot_path("kb-widget-en.png"))
            await visitor.screenshot(path=screenshot_path("ui-en-kb-widget.jpg"), quality=70)
            await buttons.filter(has_text="Yes").click()
            await expect(bot_texts(visitor).last).to_contain_text("Glad it helped")
            assert await state_of(kernel, site.site.id, BOT) == BOT

            # nothing answers it: the flow's fallback, then a human
            await widget_say(visitor, "can you recommend a good restaurant nearby")
            await expect(bot_texts(visitor).last).to_have_text("Sorry, I did not understand.")
            assert await state_of(kernel, site.site.id, "assigned") == "assigned"
            (conversation,) = await kernel.storage.list_conversations(site.site.id)
            assert conversation.meta["bot_handoff"]["reason"] == "bot did not understand"
            assert conversation.assignee_id == site.agent.id
            assert "article" not in (await bot_texts(visitor).last.text_content()).lower()
            await open_conversation(agent)
            await console_say(agent, "Hello, Bob here: the Noodle Bar next door is good.")
            human = visitor.locator("#kefu-widget .msg.theirs .text", has_text="Bob here")
            await expect(human).to_have_count(1)
            assert visitor.errors.errors == []
            await visitor.context.close()

            # Chinese: greeted, answered and cited in Chinese; "没有帮助" hands over
            zh = await visitor_page(browser, f"{shop_base}shop/{key}?lang=zh", locale="zh-CN")
            await open_widget(zh)
            await widget_say(zh, "我的积分会过期吗")
            await expect(bot_texts(zh).first).to_contain_text("有什么可以帮您")
            answer = bot_texts(zh).filter(has_text="积分")
            await expect(answer.first).to_contain_text("（来自文章：《会员与积分》）")  # noqa: RUF001
            await expect(bot_texts(zh).last).to_have_text("这个回答有帮助吗？")  # noqa: RUF001
            buttons = zh.locator("#kefu-widget .msg.bot .choices button")
            assert await buttons.all_text_contents() == ["有帮助", "没有帮助"]
            await zh.screenshot(path=screenshot_path("kb-widget-zh.png"))
            await zh.screenshot(path=screenshot_path("ui-zh-kb-widget.jpg"), quality=70)
            await buttons.filter(has_text="没有帮助").click()
            await expect(bot_texts(zh).last).to_contain_text("抱歉没能帮到您")
            conversations = await kernel.storage.list_conversations(site.site.id)
            newest = max(conversations, key=lambda c: c.created_at)
            for _ in range(100):
                newest = await kernel.storage.get_conversation(site.site.id, newest.id)
                if newest.state != BOT:
                    break
                await asyncio.sleep(0.1)
            assert newest.state in ("queued", "assigned")
            assert newest.meta["bot_handoff"]["reason"] == "kb_not_helpful"
            assert newest.meta["kb_feedback"]["article_id"] == "member-zh"
            assert zh.errors.errors == [] and agent.errors.errors == []
    finally:
        await shop_runner.cleanup()
        await kefu.runner.cleanup()
