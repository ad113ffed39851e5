"""The knowledge base's admin page (Admin > Knowledge base, /admin/kb) in a real browser
(Debian's Chromium driven by Playwright): an admin creates an article in the page and the
search box finds it as the bot's answer; the visitors' "did this help?" counts are shown;
an edit changes what the bot would say; a Chinese article answers a Chinese question;
below the threshold the page says the bot would not answer; deleting removes it from the
list and the store. Screenshot ``admin-kb.png``."""

from __future__ import annotations

import pytest

from kefu.plugins.knowledge_base import FEEDBACK_KIND, KIND, library
from tests.chat_support import add_site
from tests.test_knowledge_base import ARTICLES
from tests.web_support import chromium, expect, screenshot_path, signed_in_agent, start_kefu

pytestmark = pytest.mark.timeout(60)


async def save_article(page, title: str, body: str, lang: str = "en") -> None:
    form = page.locator("#kb-form")
    await form.locator("input[name=title]").fill(title)
    await form.locator("select[name=lang]").select_option(lang)
    await form.locator("textarea[name=body]").fill(body)
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#kb-message")).to_contain_text(title)


async def ask(page, question: str) -> None:
    await page.locator("#kb-q").fill(question)
    await page.locator("#kb-search-form button[type=submit]").click()


async def test_admin_creates_edits_finds_and_deletes_articles(tmp_path):
    kefu = await start_kefu(tmp_path)
    try:
        site = await add_site(kefu.kernel)
        await library(kefu.kernel).warming  # jieba/pinyin tables, loaded in a thread at start
        storage = kefu.kernel.storage
        async with chromium() as browser:
            admin = await signed_in_agent(browser, kefu.base, site.site.id, site.admin.email)
            admin.on("dialog", lambda dialog: dialog.accept())
            await admin.goto(f"{kefu.base}admin/kb")
            await expect(admin.locator('.admin-nav a[aria-current="page"]')).to_have_text(
                "Knowledge base"
            )
            await expect(admin.locator("#kb-rows")).to_contain_text("No article yet.")
            # the benchmark's 20 help articles first (BM25 needs more than one to weigh words)
            for article in ARTICLES:
                data = {k: article[k] for k in ("title", "body", "lang")}
                await storage.put_record(site.site.id, KIND, article["id"], data)
            feedback = {"helped": 3, "not_helped": 1}  # as the bot's "did this help?" counts
            await storage.put_record(site.site.id, FEEDBACK_KIND, "warranty-en", feedback)
            await admin.reload()
            await expect(admin.locator("#kb-rows tr[data-id]")).to_have_count(len(ARTICLES))
            warranty = admin.locator('#kb-rows tr[data-id="warranty-en"] td.feedback')
            await expect(warranty).to_have_text("3 / 1")

            await save_article(admin, "Parrots in the shop",
                               "Pets are welcome.\n\n## Singing\nParrots may sing in the shop, "
                               "quietly, before noon.")  # fmt: skip
            row = admin.locator('#kb-rows tr[data-id="parrots-in-the-shop"]')
            await expect(row).to_contain_text("Parrots in the shop")
            await expect(row).to_contain_text("English")
            record = await storage.get_record(site.site.id, KIND, "parrots-in-the-shop")
            assert record is not None and record.data["lang"] == "en"

            # the search box: what the bot would answer
            await ask(admin, "can my parrot sing before noon")
            answer = admin.locator("#kb-hits .kb-hit.answer")
            await expect(answer).to_have_attribute("data-article", "parrots-in-the-shop")
            await expect(answer).to_contain_text("Singing")
            await expect(answer).to_contain_text("quietly, before noon")
            await expect(admin.locator("#kb-hits .kb-verdict")).to_contain_text(
                "The bot would answer"
            )

            # an edit: the same record, a new version, the new text found at once
            await row.locator("button.edit").click()
            await expect(admin.locator("#kb-form input[name=id]")).to_have_value(
                "parrots-in-the-shop"
            )
            await save_article(admin, "Parrots in the shop",
                               "Pets are welcome.\n\n## Singing\nParrots may sing in the shop "
                               "until three in the afternoon.")  # fmt: skip
            await expect(row.locator("td.version")).to_have_text("2")
            await ask(admin, "can my parrot sing in the afternoon")
            await expect(answer).to_contain_text("until three in the afternoon")

            # a Chinese article, a Chinese question (traditional characters)
            await save_article(admin, "鹦鹉", "## 唱歌\n鹦鹉可以在店里小声唱歌，中午以前。", "zh")  # noqa: RUF001
            parrot_zh = admin.locator("#kb-rows tr", has_text="鹦鹉")
            await expect(parrot_zh).to_contain_text("Chinese")
            await ask(admin, "鸚鵡可以唱歌嗎")
            await expect(answer).to_contain_text("鹦鹉可以在店里小声唱歌")
            titles = [r.data["title"] for r in await storage.list_records(site.site.id, KIND)]
            assert "鹦鹉" in titles and len(titles) == len(ARTICLES) + 2

            # nothing close: the page says the flow's fallback runs
            await ask(admin, "zxqv blorp")
            await expect(admin.locator("#kb-hits .kb-verdict")).to_contain_text("fallback")
            await expect(admin.locator("#kb-hits .kb-hit.answer")).to_have_count(0)
            await ask(admin, "can my parrot sing in the afternoon")
            await expect(answer).to_contain_text("until three in the afternoon")
            await admin.screenshot(path=screenshot_path("admin-kb.png"), full_page=True)
            docs_shot = screenshot_path("ui-en-admin-kb.jpg")  # the one docs/ui.md shows
            await admin.screenshot(path=docs_shot, quality=70)

            # delete (the confirm dialog is accepted)
            await row.locator("button.delete").click()
            await expect(row).to_have_count(0)
            assert await storage.get_record(site.site.id, KIND, "parrots-in-the-shop") is None
            await expect(admin.locator("#kb-rows tr[data-id]")).to_have_count(len(ARTICLES) + 1)
            assert admin.errors.errors == []
    finally:
        await kefu.runner.cleanup()
