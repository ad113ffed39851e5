"""Knowledge base: the retrieval benchmark built from tests/data/kb_articles.json (100
questions in English and Chinese, each with the article that answers it), the articles'
REST API on a running server, and the bot answering a question no intent covers from an
article with its citation, in the visitor's language, and falling back when unsure."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

from kefu.plugins.bot_intents.text_encoders import text_encoders
from kefu.plugins.knowledge_base.retrieval import (
    Index,
    Vectors,
    passage_text,
    question_lang,
    split_passages,
)
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


def hybrid_index(passages: list) -> tuple[Index, dict]:
    """The index the server builds: BM25 plus the bot's encoders' passage vectors."""
    no_bot = SimpleNamespace(config=SimpleNamespace(section=lambda name: {}[name]))
    encoders = {e.lang: e for e in text_encoders(no_bot, lambda: True)}
    assert set(encoders) == {"en", "zh"}, "MiniLM and the Chinese word vectors are installed"
    vectors = {}
    for lang, encoder in encoders.items():
        rows = [i for i, p in enumerate(passages) if p.lang == lang]
        matrix = encoder.encode([passage_text(passages[i]) for i in rows])
        vectors[lang] = Vectors(rows, matrix, encoder.floor)
    return Index(passages, vectors=vectors), encoders


def test_sentence_vectors_find_paraphrases_the_words_miss():
    passages = [p for a in ARTICLES for p in split_passages(a["id"], a["title"], a["lang"],
                                                              a["body"])]  # fmt: skip
    words = Index(passages)
    hybrid, encoders = hybrid_index(passages)

    def top(index, question, vectors=True):
        vector = encoders[question_lang(question)].encode([question])[0] if vectors else None
        return [h.passage.article_id for h in index.search(question, 3, vector)]

    # no word in common with "Shipping fees": BM25 finds nothing at all
    assert top(words, "how much is postage", vectors=False) == []
    assert top(hybrid, "how much is postage")[0] == "shipping-en"
    # "send ... back" is in the warranty article's words; it means a return
    assert top(words, "how do i send something back", vectors=False)[0] == "warranty-en"
    assert top(hybrid, "how do i send something back")[0] == "returns-en"
    # the benchmark with vectors: no worse than BM25 alone (96 / 99 of 100)
    top1 = top3 = n = 0
    for article in ARTICLES:
        for question in article["questions"]:
            ids = top(hybrid, question)
            n += 1
            top1 += ids[:1] == [article["id"]]
            top3 += article["id"] in ids
    assert top1 >= 98 and top3 >= 100, (top1, top3, n)


def test_hand_over_threshold_on_held_out_questions():
    """``min_score`` on questions written after it was chosen (tests/data/kb_heldout.json):
    paraphrases the articles answer and shop questions none answers, en and zh. The figures
    are docs/bot.md's ("Threshold, held out"); the asserts are those figures."""
    from kefu.plugins.knowledge_base import KnowledgeBaseSettings

    held = json.loads((Path(__file__).parent / "data" / "kb_heldout.json").read_text("utf-8"))
    passages = [p for a in ARTICLES for p in split_passages(a["id"], a["title"], a["lang"],
                                                              a["body"])]  # fmt: skip
    index, encoders = hybrid_index(passages)

    def best(question):
        vector = encoders[question_lang(question)].encode([question])[0]
        hits = index.search(question, 1, vector)
        return (hits[0].score, hits[0].passage.article_id) if hits else (0.0, None)

    answerable = [(best(q), article, article.rsplit("-", 1)[1]) for q, article in
                  held["answerable"]]  # fmt: skip
    unanswerable = [(best(q), lang) for q, lang in held["unanswerable"]]
    figures = {}
    for threshold in (4, 6, 8, 10):
        for lang in ("en", "zh"):
            a = [(hit, art) for hit, art, la in answerable if la == lang]
            u = [hit for hit, la in unanswerable if la == lang]
            figures[threshold, lang] = (
                sum(h[0] >= threshold and h[1] == art for h, art in a), len(a),
                sum(h[0] >= threshold for h in u), len(u),
            )  # fmt: skip
            right, n, wrong, m = figures[threshold, lang]
            print(
                f"{threshold} {lang}: right article {right}/{n}, unanswerable answered {wrong}/{m}"
            )
    default = KnowledgeBaseSettings().min_score
    assert default == 6
    assert figures[6, "en"][0] >= 20 and figures[6, "zh"][0] >= 23, figures
    assert figures[6, "en"][2] <= 7 and figures[6, "zh"][2] <= 11, figures


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
    # the server ranks with the bot's sentence vectors (kefu_bot_text_encoders): a
    # paraphrase that shares no word with the article (BM25 alone: no hit at all)
    resp = await client.get("/v1/kb/search", params={"q": "how much is postage"}, headers=admin)
    assert (await resp.json())["hits"][0]["article_id"] == "shipping-en"
    # words of the warranty article, the meaning of the returns one (BM25: warranty first)
    q = {"q": "how do i send something back"}
    resp = await client.get("/v1/kb/search", params=q, headers=admin)
    assert (await resp.json())["hits"][0]["article_id"] == "returns-en"

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


def test_the_encoders_encode_nothing_while_shed():
    """Under pressure (``bot_embeddings`` shed) the bot's encoders answer None: the
    knowledge base then ranks by BM25 alone."""
    shed = [True]
    no_bot = SimpleNamespace(config=SimpleNamespace(section=lambda name: {}[name]))
    encoders = {e.lang: e for e in text_encoders(no_bot, lambda: not shed[0])}
    assert encoders["en"].encode(["how much is postage"]) is None
    assert encoders["zh"].encode(["运费多少"]) is None
    shed[0] = False
    assert encoders["en"].encode(["how much is postage"]).shape == (1, 384)
