"""The bot's admin page and the widget's quick replies in a real browser (Debian's Chromium
driven by Playwright): a refused flow file is shown with its file:line error, the Roll back
button changes the active version, a version's YAML can be read; a clarifying question's
choices are buttons in the widget and a click answers it."""

from __future__ import annotations

import pytest

from kefu.plugins.bot_intents import service_of as bot_of
from tests.chat_support import add_owner, add_site
from tests.test_bot_clarify import flow_text, mixed
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

pytestmark = pytest.mark.timeout(60)


async def test_admin_sees_a_refused_file_rolls_back_and_the_widget_offers_choices(tmp_path):
    path = tmp_path / "clarify.yaml"
    path.write_text(flow_text(), encoding="utf-8")
    kefu = await start_kefu(tmp_path, f'[bot]\nflows = ["{path}"]\nwatch = false\n')
    shop_runner, shop_base = await start_shop(kefu.base)
    try:
        bot = bot_of(kefu.kernel)
        first = bot.registry.active["clarify"]
        path.write_text(flow_text().replace("We open at nine.", "We open at ten."), "utf-8")
        second = (await bot.load(str(path))).sha256
        site = await add_site(kefu.kernel)
        async with chromium() as browser:
            # the flow serves every site and its file's errors are install-level: an owner
            owner = await add_owner(kefu.kernel, site.site.id)
            admin = await signed_in_agent(browser, kefu.base, site.site.id, owner.email)
            await admin.goto(f"{kefu.base}admin/bot")
            flow = admin.locator('.bot-flow[data-flow="clarify"]')
            await expect(flow.locator(".active-sha")).to_have_text(second[:12])
            await expect(flow.locator("tbody tr")).to_have_count(2)
            await expect(admin.locator("#bot-rejected")).to_contain_text("No file is refused")

            # an invalid edit is published: refused, shown with file:line, nothing changes
            path.write_text(flow_text().replace("goto: hours", "goto: nowhere"), "utf-8")
            assert await bot.load(str(path)) is None
            await admin.locator("#bot-refresh").click()
            refused = admin.locator(f'#bot-rejected li[data-file="{path}"]')
            await expect(refused).to_contain_text(f"{path}:32: state 'menu': no state named")
            await expect(refused).to_contain_text("refused 1 time(s)")
            await expect(flow.locator(".active-sha")).to_have_text(second[:12])

            # the version's source, then a rollback with the button
            await flow.locator(f'tr[data-sha="{second}"] button.view').click()
            await expect(admin.locator("#bot-source-text")).to_contain_text("We open at ten.")
            await flow.locator("button.rollback").click()
            await expect(flow.locator(".active-sha")).to_have_text(first[:12])
            await expect(flow.locator(f'tr[data-sha="{first}"]')).to_contain_text("rollback")
            assert bot.registry.active["clarify"] == first
            await admin.screenshot(path=screenshot_path("admin-bot.png"), full_page=True)
            await flow.locator(f'tr[data-sha="{second}"] button.activate').click()
            await expect(flow.locator(".active-sha")).to_have_text(second[:12])
            assert admin.errors.errors == []

            # the widget: a clarifying question's choices are buttons; a click answers it
            visitor = await visitor_page(browser, f"{shop_base}shop/{site.site.widget_key}")
            await open_widget(visitor)
            await widget_say(visitor, mixed(bot.registry.for_site(site.site.id)))
            buttons = visitor.locator("#kefu-widget .msg.bot .choices button")
            await expect(buttons).to_have_count(2)
            assert set(await buttons.all_text_contents()) == {"A refund", "Track an order"}
            await visitor.locator("#kefu-widget .choices button", has_text="A refund").click()
            reply = visitor.locator("#kefu-widget .msg.bot .text", has_text="Refunds take")
            await expect(reply).to_have_count(1)
            await expect(visitor.locator("#kefu-widget .choices")).to_have_count(0)
            await expect(visitor.locator("#kefu-widget .msg.mine .text").last).to_have_text(
                "A refund"
            )
            assert visitor.errors.errors == []
    finally:
        await shop_runner.cleanup()
        await kefu.runner.cleanup()
