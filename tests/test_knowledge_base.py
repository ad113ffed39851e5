"""Knowledge base: the retrieval benchmark built from tests/data/kb_articles.json (100
questions in English and Chinese, each with the article that answers it), the articles'
REST API on a running server, and the bot answering a question no intent covers from an
article with its citation, in the visitor's language, and falling back when unsure."""

from __future__ import annotations

import json
import time
from pathlib import Path

from kefu.plugins.knowledge_base.retrieval import Index, split_passages
from tests.chat_support import add_owner, app_kernel, login
from tests.routing_support import site_of, visitor
from tests.test_bot_faq import shop_flow_client

ARTICLES = json.loads(
    (Path(__file__).parent / "data" / "kb_articles.json").read_text(encoding="utf-8")
)
BOT = {"kind": "bot", "id": "shop"}


def test_retrieval_benchmark_top1_top3():
    index = Index(
        [p for a in ARTICLES for p in split_passages(a["id"], a["title"], a["lang"], a["body"])]
    )
    top1 = top3 = n = 0
    for article in ARTICLES:
        for question in article["questions"]:
            ids = [hit.passage.article_id for hit in index.search(question, 3)]
            n += 1
            top1 += ids[:1] == [article["id"]]
            top3 += article["id"] in ids
    assert n >= 100
    assert top1 / n >= 0.80 and top3 / n >= 0.95, (top1, top3, n)


def test_passages_split_at_headings():
    body = "Intro.\n\n## First\nOne.\n\n## Second\nTwo."
    passages = split_passages("a", "T", "en", body)
    assert [(p.heading, p.text) for p in passages] == [("", "Intro."), ("First", "One."),
                                                       ("Second", "Two.")]  # fmt: skip


async def test_articles_rest_and_the_bot_answers_from_them(aiohttp_client, tmp_path):
    client, _ = await shop_flow_client(aiohttp_client, tmp_path)
    kernel = app_kernel(client.app)
    site = await site_of(client)
    admin = {"Authorization": f"Bearer {await login(client, site.site.id, site.admin.email)}"}
    owner = await add_owner(kernel, site.site.id)
    assert owner is not None
    for article in ARTICLES:
        body = {k: article[k] for k in ("title", "body", "lang")}
        resp = await client.put(f"/v1/kb/articles/{article['id']}", json=body, headers=admin)
        assert resp.status == 200, await resp.text()
    parrot = {
        "title": "Pets in the shop",
        "lang": "en",
        "body": "## Parrots\nParrots may sing in the shop, quietly, before noon.",
    }
    resp = await client.put("/v1/kb/articles/pets", json=parrot, headers=admin)
    assert (await resp.json())["version"] == 1
    listed = await (await client.get("/v1/kb/articles", headers=admin)).json()
    assert len(listed["articles"]) == len(ARTICLES) + 1
    assert (await client.get("/v1/kb/articles/nope", headers=admin)).status == 404
    resp = await client.get("/v1/kb/search", params={"q": "怎么开发票"}, headers=admin)
    assert (await resp.json())["hits"][0]["article_id"] == "invoice-zh"

    started = time.perf_counter()
    guest = await visitor(client, site)
    await guest.peer.expect("message", sender=BOT)  # greeting
    await guest.peer.send(op="send", conversation_id=guest.conversation_id, cid="q1",
                          text="can parrots sing in the shop before noon")  # fmt: skip
    answer = await guest.peer.expect("message", within=10, sender=BOT)
    assert "Parrots may sing" in answer["text"] and '"Pets in the shop"' in answer["text"]
    helped = await guest.peer.expect("message", within=10, sender=BOT)
    assert helped["text"] == "Did this help?"
    assert time.perf_counter() - started < 30

    await guest.peer.send(op="send", conversation_id=guest.conversation_id, cid="q2",
                          text="积分会过期吗")  # fmt: skip
    answer = await guest.peer.expect("message", within=10, sender=BOT)
    assert "积分有效期" in answer["text"] and "《会员与积分》" in answer["text"]
    helped = await guest.peer.expect("message", within=10, sender=BOT)
    assert helped["text"] == "这个回答有帮助吗？"  # noqa: RUF001

    # nothing in the articles: the flow's own fallback, no citation
    await guest.peer.send(op="send", conversation_id=guest.conversation_id, cid="q3",
                          text="zxqv blorp")  # fmt: skip
    answer = await guest.peer.expect("message", within=10, sender=BOT)
    assert "article" not in answer["text"].lower() and "文章" not in answer["text"]

    resp = await client.delete("/v1/kb/articles/pets", headers=admin)
    assert resp.status == 204
    assert (await client.delete("/v1/kb/articles/pets", headers=admin)).status == 404
