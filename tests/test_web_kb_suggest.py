"""The console's suggestions for the open conversation (console/suggest.js) in a real
browser (Debian's Chromium driven by Playwright): for the visitor's last message the
panel shows the best help-article passages (GET /v1/kb/search) and the canned replies
sharing its words; one click puts a passage into the composer, another a canned reply's
/shortcut, and both reach the visitor as sent (the shortcut with its placeholder filled
in); a new visitor message (in Chinese) changes the suggestions, shown on a Chinese console
too. Screenshots ``console-suggestions.png``, ``ui-{en,zh}-console-suggestions.jpg``."""

from __future__ import annotations

import aiohttp
import pytest

from kefu.plugins.knowledge_base import KIND, library
from tests.chat_support import PASSWORD, add_site
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

CANNED = [
    ("warranty", "Every product has a two-year warranty, {visitor.name|friend}."),
    ("points", "积分一年内有效，可以在会员中心查看。"),  # noqa: RUF001
    ("hello", "Hello! How can I help?"),
]


async def add_canned(base: str, site_id: str, email: str) -> None:
    async with aiohttp.ClientSession() as http:
        body = {"site_id": site_id, "email": email, "password": PASSWORD}
        async with http.post(f"{base}v1/auth/login", json=body) as resp:
            token = (await resp.json())["token"]
        for shortcut, text in CANNED:
            reply = {"shortcut": shortcut, "text": text, "scope": "site"}
            async with http.post(f"{base}v1/canned_replies", json=reply,
                                 headers={"Authorization": f"Bearer {token}"}) as resp:  # fmt: skip
                assert resp.status in (200, 201), await resp.text()


async def test_suggestions_for_the_visitors_last_message_insert_into_the_composer(tmp_path):
    kefu = await start_kefu(tmp_path)
    shop_runner, shop_base = await start_shop(kefu.base)
    try:
        site = await add_site(kefu.kernel)
        await library(kefu.kernel).warming  # jieba/pinyin tables, loaded in a thread at start
        for article in ARTICLES:
            data = {k: article[k] for k in ("title", "body", "lang")}
            await kefu.kernel.storage.put_record(site.site.id, KIND, article["id"], data)
        await add_canned(kefu.base, site.site.id, site.admin.email)
        async with chromium() as browser:
            agent = await signed_in_agent(browser, kefu.base, site.site.id, site.agent.email)
            visitor = await visitor_page(browser, f"{shop_base}shop/{site.site.widget_key}")
            await open_widget(visitor)
            await widget_say(visitor, "my headphones broke, how long is the warranty?")
            await open_conversation(agent)

            panel = agent.locator("#suggestions")
            await expect(panel.locator("h3")).to_have_text("Suggestions")
            first_kb = panel.locator(".suggest.kb").first
            await expect(first_kb).to_have_attribute("data-article", "warranty-en")
            canned = panel.locator(".suggest.canned-reply")
            await expect(canned.first).to_have_attribute("data-shortcut", "warranty")
            shortcuts = await canned.evaluate_all("els => els.map(e => e.dataset.shortcut)")
            assert "hello" not in shortcuts
            await agent.screenshot(path=screenshot_path("console-suggestions.png"))
            await agent.screenshot(
                path=screenshot_path("ui-en-console-suggestions.jpg"), quality=70
            )

            # one click: the passage into the composer, then sent as typed
            box = agent.locator("#composer-text")
            await first_kb.click()
            passage = next(a for a in ARTICLES if a["id"] == "warranty-en")[
                "body"
            ]  # the composer holds one of its passages
            value = await box.input_value()
            assert value and value in passage, value
            await box.press("Enter")
            shown = visitor.locator("#kefu-widget .msg.theirs .text", has_text=value[:40])
            await expect(shown).to_have_count(1)

            # the canned reply: its /shortcut, filled in by the server when sent
            await canned.first.click()
            await expect(box).to_have_value("/warranty")
            await box.press("Enter")
            reply = visitor.locator("#kefu-widget .msg.theirs .text",
                                    has_text="two-year warranty, friend.")  # fmt: skip
            await expect(reply).to_have_count(1)

            # typed text first, then a passage: added after it
            await box.fill("Hi!")
            await first_kb.click()
            assert (await box.input_value()).startswith("Hi!\n")
            await box.fill("")

            # the visitor asks something else, in Chinese: new suggestions
            await widget_say(visitor, "我的积分会过期吗")
            await expect(panel.locator(".suggest-for")).to_contain_text("我的积分会过期吗")
            await expect(panel.locator(".suggest.kb").first).to_have_attribute(
                "data-article", "member-zh"
            )
            await expect(panel.locator(".suggest.canned-reply").first).to_have_attribute(
                "data-shortcut", "points"
            )
            # the same panel on a Chinese console: Bob on a second, zh-CN browser
            zh = await signed_in_agent(
                browser, kefu.base, site.site.id, site.agent.email, locale="zh-CN"
            )
            await open_conversation(zh)
            zh_panel = zh.locator("#suggestions")
            await expect(zh_panel.locator("h3")).to_have_text("建议")
            await expect(zh_panel.locator(".suggest.kb").first).to_have_attribute(
                "data-article", "member-zh"
            )
            await expect(zh_panel.locator(".suggest.canned-reply").first).to_have_attribute(
                "data-shortcut", "points"
            )
            await zh.screenshot(path=screenshot_path("ui-zh-console-suggestions.jpg"), quality=70)
            await console_say(agent, "稍等")
            assert agent.errors.errors == [] and zh.errors.errors == []
    finally:
        await shop_runner.cleanup()
        await kefu.runner.cleanup()
