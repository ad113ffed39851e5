"""The widget's ``kefu.identify({...})`` in the real browser (Debian's Chromium under
Playwright): an admin creates the site's identity secret on Admin > Identity, the shop's page
identifies its signed-in customer, and the agent console shows the name and the verified
user. docs/ui.md, "The widget's page API"; docs/security.md, "Signed visitor identity"."""

from __future__ import annotations

import pytest

from kefu.plugins.visitor_identity.keys import user_hash
from tests.chat_support import add_site
from tests.web_support import (
    chromium,
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

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(90)]

IDENTIFY = """async (profile) => {
  try { return await window.kefu.identify(profile); }
  catch (err) { return {code: err.code || String(err)}; }
}"""


async def test_identify_names_the_visitor_and_the_console_sees_the_verified_user(tmp_path):
    kefu = await start_kefu(tmp_path)
    shop_runner, shop_base = await start_shop(kefu.base)
    site = await add_site(kefu.kernel, "idshop")
    try:
        async with chromium() as browser:
            admin = await signed_in_agent(browser, kefu.base, site.site.id, site.admin.email)
            await admin.goto(f"{kefu.base}admin/identity")
            await admin.locator("#identity-rotate button[type=submit]").click()
            secret_cell = admin.locator("#identity-rows .identity-secret").first
            await expect(secret_cell).to_contain_text("idsec_")
            secret = await secret_cell.text_content()
            await admin.screenshot(path=screenshot_path("identity-admin.png"))

            shop = await visitor_page(browser, f"{shop_base}shop/{site.site.widget_key}")
            refused = await shop.evaluate(
                IDENTIFY, {"user_id": "cust-7", "user_hash": user_hash("idsec_wrong", "cust-7")}
            )
            assert refused == {"code": "identity_invalid"}
            profile = {
                "user_id": "cust-7",
                "user_hash": user_hash(secret, "cust-7"),
                "name": "Grace Hopper",
                "email": "grace@navy.test",
                "attributes": {"plan": "enterprise"},
            }
            answer = await shop.evaluate(IDENTIFY, profile)
            assert answer["identity"] == {"user_id": "cust-7", "verified": True}, answer
            await open_widget(shop)
            await widget_say(shop, "hello, it is Grace")

            await admin.goto(f"{kefu.base}console")
            await admin.locator("#conn-state.ws, #conn-state.longpoll").wait_for()
            await open_conversation(admin)
            panel = admin.locator("#visitor-panel")
            await expect(panel.locator("h2")).to_have_text("Grace Hopper")
            await expect(panel).to_contain_text("grace@navy.test")
            await expect(panel).to_contain_text("enterprise")
            await expect(panel.locator(".identity.verified")).to_contain_text("cust-7")
            await expect(admin.locator("#conversation-list li[data-id]").first).to_contain_text(
                "Grace Hopper"
            )
            await admin.screenshot(path=screenshot_path("identity-console.png"))
            assert admin.errors.errors == [] and shop.errors.errors == []
    finally:
        await shop_runner.cleanup()
        await kefu.runner.cleanup()
