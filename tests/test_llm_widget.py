"""The widget renders a generative answer as it streams (Debian's Chromium under
Playwright): the bot's draft grows in place, then the stored answer with its sources
replaces it; a refused one hands the visitor over. The model is the stand-in mock of
:mod:`tests.llm_standin` (no model server exists on this machine)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.chat_support import add_site
from tests.llm_standin import StandIn
from tests.test_bot_example import shop_config
from tests.test_bot_faq import SHOP
from tests.test_llm_openai import ARTICLES, QUESTION, llm_toml
from tests.web_support import (
    chromium,
    expect,
    open_widget,
    screenshot_path,
    signed_in_agent,
    start_kefu,
    start_shop,
    visitor_page,
    widget_say,
)

pytestmark = pytest.mark.timeout(90)


@contextlib.asynccontextmanager
async def llm_shop(tmp_path: Path, standin: StandIn):
    """kefu with the shop flow and ``standin`` as its model, the shop page, and a site with
    the ARTICLES of tests/test_llm_openai.py: ``(kefu, shop_base, site)``; everything,
    ``standin`` included, stopped after."""
    flow = tmp_path / "shop.yaml"
    flow.write_bytes(SHOP.read_bytes())
    kefu = await start_kefu(tmp_path, shop_config(flow) + llm_toml(standin.url))
    shop_runner, shop_base = await start_shop(kefu.base)
    try:
        site = await add_site(kefu.kernel)
        for article_id, (title, body) in ARTICLES.items():
            record = {"title": title, "body": body, "lang": "en"}
            await kefu.kernel.storage.put_record(site.site.id, "kb.article", article_id, record)
        yield kefu, shop_base, site
    finally:
        await shop_runner.cleanup()
        await kefu.runner.cleanup()
        await standin.stop()


async def test_the_widget_streams_the_answer_then_shows_it_with_its_sources(tmp_path):
    standin = await StandIn(delay=0.15).start()  # ~2 s of streaming, visible drafts
    async with llm_shop(tmp_path, standin) as (_kefu, shop_base, site):
        async with chromium() as browser:
            page = await visitor_page(browser, f"{shop_base}shop/{site.site.widget_key}")
            await open_widget(page)
            await widget_say(page, QUESTION)
            draft = page.locator("#kefu-widget .msg.bot.draft")
            await expect(draft).to_be_visible(timeout=10_000)
            first = await draft.locator(".text").text_content()
            full = "According to our help pages: Parrots may sing in the shop, quietly"
            assert full.startswith(first) or first.startswith(full), first
            await expect(draft.locator(".text")).not_to_have_text(first, timeout=5_000)  # grows
            cid = await draft.get_attribute("data-cid")
            await page.screenshot(path=screenshot_path("widget-llm-draft.png"))
            answer = page.locator(f'#kefu-widget .msg.bot[data-cid="{cid}"]:not(.draft)')
            await expect(answer).to_contain_text('Sources: [1] "Pets in the shop"', timeout=10_000)
            await expect(answer).to_contain_text("Parrots may sing in the shop")
            assert await page.locator("#kefu-widget .msg.draft").count() == 0
            assert await page.locator(f'#kefu-widget [data-cid="{cid}"]').count() == 1
            await expect(page.locator("#kefu-widget .msg.bot .text").last).to_have_text(
                "Did this help?", timeout=5_000
            )
            await page.screenshot(path=screenshot_path("widget-llm-answer.png"))

            standin.mode = "refuse"
            await widget_say(page, "can parrots sing in the shop after noon")
            await expect(page.locator("#kefu-widget .msg.bot .text").last).to_contain_text(
                "passing you to a colleague", timeout=10_000
            )
            assert await page.locator("#kefu-widget .msg.draft").count() == 0
            assert page.errors.errors == []


async def test_the_console_shows_the_bots_answer_being_written_in_english_and_chinese(tmp_path):
    """An agent watching a bot conversation sees the generated answer grow where it will be
    (marked as being written, in the agent's language), then the stored answer with its
    sources in its place; a draft the bot drops (an uncited answer) goes away."""
    standin = await StandIn(delay=0.15).start()
    async with llm_shop(tmp_path, standin) as (kefu, shop_base, site):
        async with chromium() as browser:
            visitor = await visitor_page(browser, f"{shop_base}shop/{site.site.widget_key}")
            await open_widget(visitor)
            await widget_say(visitor, "hello")
            await expect(visitor.locator("#kefu-widget .msg.bot").first).to_be_visible()
            (held,) = await kefu.kernel.storage.list_conversations(site.site.id, state="bot")
            agents = {}
            for email, locale, writing in (
                (site.agent.email, "en-US", "Writing an answer…"),
                (site.admin.email, "zh-CN", "正在撰写回答…"),
            ):
                page = await signed_in_agent(browser, kefu.base, site.site.id, email, locale=locale)
                # a conversation the bot holds is in no inbox tab: opened from its link, as
                # a search result or a colleague's link opens it
                await page.goto(f"{kefu.base}console#c={held.id}")
                await page.reload()  # (the same page with a new #fragment is not loaded again)
                await page.locator("#conn-state.ws, #conn-state.longpoll").wait_for()
                await page.locator("#chat-inner:not([hidden])").wait_for()
                agents[locale] = (page, writing)

            await widget_say(visitor, QUESTION)
            cid = None
            for locale, (page, writing) in agents.items():
                draft = page.locator("#messages .msg.from-bot.draft")
                await expect(draft).to_be_visible(timeout=10_000)
                await expect(draft.locator(".state")).to_have_text(writing)
                first = await draft.locator(".text").text_content()
                full = "According to our help pages: Parrots may sing in the shop, quietly"
                assert full.startswith(first) or first.startswith(full), first
                cid = await draft.get_attribute("data-cid")
                await expect(draft.locator(".text")).not_to_have_text(first, timeout=5_000)
                await page.screenshot(path=screenshot_path(f"console-llm-draft-{locale}.png"))
            for page, _ in agents.values():
                answer = page.locator(f'#messages .msg.from-bot[data-cid="{cid}"]:not(.draft)')
                await expect(answer).to_contain_text(
                    'Sources: [1] "Pets in the shop"', timeout=10_000
                )
                assert await page.locator("#messages .msg.draft").count() == 0
                assert await page.locator(f'#messages [data-cid="{cid}"]').count() == 1

            standin.mode = "uncited"  # streams an answer, which the bot then refuses
            await widget_say(visitor, "can parrots sing in the shop after noon")
            for page, _ in agents.values():
                await expect(page.locator("#messages .msg.from-bot.draft")).to_be_visible(
                    timeout=10_000
                )
            for page, _ in agents.values():
                await expect(page.locator("#messages .msg.from-bot .text").last).to_contain_text(
                    "passing you to a colleague", timeout=10_000
                )
                await expect(page.locator("#messages .msg.draft")).to_have_count(0)
                assert page.errors.errors == []
