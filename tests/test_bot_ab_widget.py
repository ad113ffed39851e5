"""The widget's page API in a real browser (Debian's Chromium driven by Playwright): a
visitor on a shop's page sees the bot's A/B variant, and the page's `kefu.track("purchase")`
converts it (the `track` frame, then conversation.meta.bot_ab)."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from kefu.plugins.bot_intents import service_of as bot_of
from tests.chat_support import add_site
from tests.test_bot_ab import CONFIG, CST, FLOW
from tests.web_support import chromium, expect, open_widget, start_kefu, start_shop, visitor_page

pytestmark = pytest.mark.timeout(60)


async def test_page_calls_kefu_track_and_the_variant_converts(tmp_path):
    flow = tmp_path / "promo.yaml"
    flow.write_text(FLOW, encoding="utf-8")
    kefu = await start_kefu(tmp_path, CONFIG.format(flow=flow))
    shop_runner, shop_base = await start_shop(kefu.base)
    try:
        site = await add_site(kefu.kernel)  # nobody online: the bot still answers
        bot = bot_of(kefu.kernel)
        bot.ab.strategy.clock = lambda: datetime(2026, 11, 20, 10, tzinfo=CST)  # no sale
        spec = bot.registry.active_flow("promo").spec
        async with chromium() as browser:
            page = await visitor_page(browser, f"{shop_base}shop/{site.site.widget_key}")
            # before any conversation: queued or sent, it converts nothing yet
            assert await page.evaluate("typeof window.kefu.track") == "function"
            assert await page.evaluate("kefu.track('bad name')") is False
            await open_widget(page)
            await page.locator("#kefu-widget .composer textarea").fill("hello")
            await page.locator("#kefu-widget .composer textarea").press("Enter")
            bot_texts = page.locator("#kefu-widget .msg.theirs:not(.notice) .text")
            await expect(bot_texts.first).to_be_visible(timeout=10_000)
            storage = kefu.kernel.storage
            (conversation,) = await storage.list_conversations(site.site.id)
            offer = spec.experiments["welcome_offer"].assign(conversation.visitor_id)
            shown = await bot_texts.all_text_contents()
            texts = spec.states["welcome"].say.cases[-1].arms[offer].texts()
            assert texts[0] in shown
            record = conversation.meta["bot_ab"]["welcome_offer"]
            assert record["variant"] == offer and record["converted_at"] is None

            assert await page.evaluate("kefu.track('purchase', {order: 'A1', value: 59.9})")
            for _ in range(200):
                found = await storage.get_conversation(site.site.id, conversation.id)
                if found.meta["bot_ab"]["welcome_offer"]["converted_at"]:
                    break
                await asyncio.sleep(0.05)
            assert found.meta["bot_ab"]["welcome_offer"]["converted_via"] == "track"
            assert page.errors.errors == []
    finally:
        await shop_runner.cleanup()
        await kefu.runner.cleanup()
