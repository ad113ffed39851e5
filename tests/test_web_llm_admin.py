"""*Admin → Generative answers* (static/admin/llm.js over the llm_openai plugin's
/v1/llm/settings) in Chromium: an admin sees what the site's bot uses (kefu.toml's
[llm_openai] values, "the install's key is used", never the key), changes the model and
the answer length and gives the site its own key; the REST answer and the page hold no
key; the bot's next generated answer asks the stand-in model for the new model with the
new key; the page in Chinese; "Use the install's values" goes back."""

from __future__ import annotations

import aiohttp
import pytest

from tests.chat_support import login
from tests.llm_standin import StandIn
from tests.test_llm_openai import KEY, QUESTION
from tests.test_llm_widget import llm_shop
from tests.web_support import (
    chromium,
    expect,
    open_widget,
    screenshot_path,
    signed_in_agent,
    visitor_page,
    widget_say,
)

pytestmark = pytest.mark.timeout(120)
SITE_KEY = "sk-site-own-key-0123456789"


async def test_admin_views_and_changes_the_sites_generative_answer_settings(tmp_path):
    standin = await StandIn().start()
    async with llm_shop(tmp_path, standin) as (kefu, shop_base, site):
        async with chromium() as browser:
            admin = await signed_in_agent(browser, kefu.base, site.site.id, site.admin.email)
            await admin.goto(f"{kefu.base}admin/llm")
            form = admin.locator("#llm-form")
            await expect(form).to_be_visible()
            await expect(form.locator("[name=model]")).to_have_value("standin-1")
            await expect(form.locator("[name=base_url]")).to_have_value(standin.url)
            await expect(form.locator("[name=max_tokens]")).to_have_value("200")
            await expect(form.locator("[name=enabled]")).to_be_checked()
            await expect(admin.locator("#llm-key-state")).to_contain_text("install's key is used")
            await expect(admin.locator("#llm-bounds")).to_contain_text(
                "Answers at once per process"
            )
            assert KEY not in await admin.content()
            await form.locator("[name=model]").fill("standin-2")
            await form.locator("[name=max_tokens]").fill("120")
            await form.locator("[name=api_key]").fill(SITE_KEY)
            await form.locator("button[type=submit]").click()
            await expect(admin.locator("#llm-message")).to_have_text("Saved.")
            await expect(admin.locator("#llm-key-state")).to_contain_text("set for this site")
            await expect(form.locator("[name=api_key]")).to_have_value("")
            assert SITE_KEY not in await admin.content() and KEY not in await admin.content()
            await admin.screenshot(path=screenshot_path("admin-llm.png"))

            async with aiohttp.ClientSession(base_url=kefu.base) as http:
                token = await login(http, site.site.id, site.admin.email)
                bearer = {"Authorization": f"Bearer {token}"}
                async with http.get("/v1/llm/settings", headers=bearer) as resp:
                    raw = await resp.text()
            assert SITE_KEY not in raw and KEY not in raw, raw
            assert '"model":"standin-2"' in raw.replace(" ", "") and '"api_key_from":"site"' in raw

            # the bot's next generated answer uses them (the stand-in checks the key)
            standin.key = SITE_KEY
            visitor = await visitor_page(browser, f"{shop_base}shop/{site.site.widget_key}")
            await open_widget(visitor)
            await widget_say(visitor, QUESTION)
            answer = visitor.locator("#kefu-widget .msg.bot:not(.draft)", has_text="Sources:")
            await expect(answer).to_contain_text("Pets in the shop", timeout=15_000)
            asked = standin.requests[-1]
            assert asked["model"] == "standin-2" and asked["max_tokens"] == 120

            zh = await signed_in_agent(browser, kefu.base, site.site.id, site.agent.email,
                                       locale="zh-CN")  # fmt: skip
            assert (await zh.goto(f"{kefu.base}admin/llm")).status == 403  # admins only
            admin_zh = await signed_in_agent(browser, kefu.base, site.site.id, site.admin.email,
                                             locale="zh-CN")  # fmt: skip
            await admin_zh.goto(f"{kefu.base}admin/llm")
            await expect(admin_zh.locator("h1")).to_have_text("生成式回答")
            await expect(admin_zh.locator("#llm-key-state")).to_have_text(
                "本站点已设置密钥（不显示）。留空即保留。"  # noqa: RUF001
            )
            await admin_zh.screenshot(path=screenshot_path("admin-llm-zh.png"))

            await admin.locator("#llm-reset").click()
            await expect(form.locator("[name=model]")).to_have_value("standin-1")
            await expect(admin.locator("#llm-key-state")).to_contain_text("install's key is used")
            assert admin.errors.errors == [] and admin_zh.errors.errors == []
