"""The admin page /admin/webhooks in a real browser (Debian's Chromium under Playwright):
subscribe with the form, see a dead letter with its attempts, resend it, see it delivered."""

from __future__ import annotations

import secrets

import pytest

from tests.chat_support import add_site
from tests.web_support import chromium, expect, screenshot_path, signed_in_agent, start_kefu
from tests.webhook_support import Receiver

pytestmark = pytest.mark.timeout(90)

FAST = (
    "[webhooks]\nbackoff_base_s = 0.05\nbackoff_max_s = 0.2\npoll_interval_s = 0.1\n"
    "max_attempts = 2\n"
)


async def test_admin_page_subscribes_shows_dead_letters_and_resends(tmp_path):
    receiver = Receiver(always_fail=True)
    await receiver.start()
    kefu = await start_kefu(tmp_path, FAST)
    try:
        site = await add_site(kefu.kernel, f"wh-{secrets.token_hex(3)}")
        async with chromium() as browser:
            ada = await signed_in_agent(browser, kefu.base, site.site.id, site.admin.email)
            await ada.goto(f"{kefu.base}admin/webhooks")
            await ada.fill("#webhook-form input[name=url]", receiver.url)
            await ada.locator('#webhook-events input[value="conversation.created"]').check()
            await ada.locator("#webhook-form button[type=submit]").click()
            await expect(ada.locator("#webhook-message")).to_contain_text("whsec_")
            receiver.secret = (await ada.locator("#webhook-message").text_content()).split()[-1]
            await expect(ada.locator("#webhook-rows")).to_contain_text(receiver.url)

            await kefu.kernel.emit("conversation.started", site.site.id, conversation_id="c-1")
            await receiver.wait_for(lambda: len(receiver.requests) == 2, 20, "two attempts")
            await ada.locator("#webhook-rows button", has_text="Deliveries").click()
            dead = ada.locator("#webhook-log button[data-status=dead]")
            row = ada.locator("#delivery-rows tr", has_text="conversation.created")
            for _ in range(50):  # the second failure is recorded just after the receiver saw it
                await dead.click()
                if await row.count():
                    break
            await expect(row).to_contain_text("HTTP 500")
            await expect(row.locator("td").nth(2)).to_have_text("2")
            await ada.screenshot(path=screenshot_path("admin-webhooks-dead.png"))

            receiver.always_fail = False
            await row.locator("button", has_text="Resend").click()
            await expect(ada.locator("#webhook-message")).to_contain_text("Queued")
            await receiver.wait_for(lambda: receiver.accepted, 20, "the resent delivery")
            await ada.locator("#webhook-log button[data-status=delivered]").click()
            await expect(ada.locator("#delivery-rows")).to_contain_text("conversation.created")
            assert receiver.accepted[0].signed
            assert ada.errors.errors == []
    finally:
        await kefu.runner.cleanup()
        await receiver.stop()
