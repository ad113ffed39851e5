"""Knowledge base: help articles (Markdown, English/Chinese) stored as storage records
(kind ``kb.article``), searched by BM25 over words, Chinese characters/bigrams and pinyin
(:mod:`.retrieval`), answering the bot's fallback turns through ``kefu_bot_knowledge``
and suggesting articles to agents. The visitors' "did this help?" answers (the bot's
``bot.knowledge_feedback`` events) are added up per article in records of kind
``kb.feedback`` and listed with the articles. REST under ``/v1/kb/`` (docs/api.md);
settings ``[knowledge_base]``; docs/bot.md, "Knowledge base".
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kefu.core.errors import ApiError
from kefu.core.storage import VersionConflict
from kefu.core.types import DegradableFeature, KnowledgeAnswer, RestEndpoint
from kefu.hooks import hookimpl
from kefu.plugins.knowledge_base.retrieval import (
    Index,
    Vectors,
    passage_text,
    question_lang,
    split_passages,
    terms,
)

log = logging.getLogger(__name__)

KIND = "kb.article"
#: Per article (same id): how many visitors said the bot's answer from it helped or not.
FEEDBACK_KIND = "kb.feedback"
STATE = "knowledge_base"
ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class KnowledgeBaseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: BM25 score of the best passage below which the bot does not answer from an
    #: article (chosen on tests/data/kb_articles.json against out-of-scope questions).
    min_score: float = Field(6.0, ge=0)
    #: Seconds an index is reused before the site's articles are read again (edits made
    #: through this process rebuild it at once).
    refresh_s: float = Field(30.0, ge=0)
    #: Weight of the sentence vectors beside BM25 (hybrid retrieval: a passage of the
    #: question's language adds ``weight * max(0, cosine - the encoder's floor)``); 0:
    #: words only. Used when a plugin offers encoders (``kefu_bot_text_encoders``: the
    #: bot's MiniLM for English, its Chinese word vectors for Chinese).
    vector_weight: float = Field(10.0, ge=0)


class ArticleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(..., min_length=1, max_length=200)
    body: str = Field(..., min_length=1, max_length=10_000, description="Markdown")
    lang: Literal["en", "zh"] = "en"
    tags: list[str] = Field(default_factory=list, max_length=20)


class ArticleOut(ArticleIn):
    model_config = ConfigDict(extra="ignore")
    id: str
    version: int
    #: Visitors who answered "did this help?" after the bot answered from this article.
    helped: int = 0
    not_helped: int = 0


class ArticleList(BaseModel):
    articles: list[ArticleOut]


class SearchQuery(BaseModel):
    q: str = Field(..., min_length=1, max_length=200)
    limit: int = Field(3, ge=1, le=20)


class SearchHit(BaseModel):
    article_id: str
    title: str
    heading: str
    passage: str
    score: float


class SearchResult(BaseModel):
    hits: list[SearchHit]
    #: The bot answers from the first hit only when its score is at least this.
    min_score: float
    shed: bool = Field(
        False,
        description="True while the server is under pressure (degradation level 2, feature "
        "`kb_suggestions`): nothing was searched and `hits` is empty; ask again later.",
    )


class Library:
    """Per-site indexes built from the stored articles, rebuilt after a change."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._indexes: dict[str, tuple[float, Index]] = {}
        self.warming: asyncio.Future | None = None  # the text tables loading (kefu_startup)
        #: False while ``kb_suggestions`` is shed under pressure: ``/v1/kb/search`` (the
        #: console's suggestions per visitor message) answers ``shed`` without searching
        self.suggestions = True
        self._encoders: dict[str, Any] | None = None
        #: sentence vectors of passages already encoded, per site: {(lang, text): vector}
        self._vectors: dict[str, dict[tuple[str, str], Any]] = {}

    @property
    def encoders(self) -> dict[str, Any]:
        """The :class:`kefu.core.types.TextEncoder` of each language, {} without."""
        if self._encoders is None:
            self._encoders = self.kernel.hooks.bot_text_encoders()
        return self._encoders

    def warm(self) -> None:
        """Load the text tables and the encoders' models (blocking: run in a thread)."""
        terms("知识库 warm")
        for encoder in self.encoders.values():
            encoder.encode(["warm"])

    async def _passage_vectors(self, site_id: str, passages: list[Any]) -> dict[str, Vectors]:
        """Each language's passage vectors, encoding only the passages not seen before."""
        if self.kernel.config.section("knowledge_base").vector_weight <= 0:
            return {}
        known = self._vectors.get(site_id, {})
        kept: dict[tuple[str, str], Any] = {}
        out: dict[str, Vectors] = {}
        loop = asyncio.get_running_loop()
        for lang, encoder in self.encoders.items():
            rows = [i for i, p in enumerate(passages) if p.lang == lang]
            texts = [passage_text(passages[i]) for i in rows]
            new = [t for t in dict.fromkeys(texts) if (lang, t) not in known]
            if new:
                encoded = await loop.run_in_executor(None, encoder.encode, new)
                if encoded is None:  # shed or failed: this language by words only
                    continue
                known = {**known, **{(lang, t): v for t, v in zip(new, encoded, strict=True)}}
            if not rows:
                continue
            vectors = [known[(lang, t)] for t in texts]
            kept.update({(lang, t): v for t, v in zip(texts, vectors, strict=True)})
            out[lang] = Vectors(rows, np.stack(vectors), encoder.floor)
        self._vectors[site_id] = kept
        return out

    async def question_vector(self, question: str) -> Any:
        """The question's sentence vector for :meth:`Index.search`, None without."""
        if self.kernel.config.section("knowledge_base").vector_weight <= 0:
            return None
        encoder = self.encoders.get(question_lang(question))
        if encoder is None:
            return None
        loop = asyncio.get_running_loop()
        encoded = await loop.run_in_executor(None, encoder.encode, [question])
        return None if encoded is None else encoded[0]

    async def search(self, site_id: str, question: str, limit: int) -> list[Any]:
        """The best passage of each matching article, best first (BM25 + vectors)."""
        index = await self.index(site_id)
        if not index.passages:
            return []
        return index.search(question, limit, await self.question_vector(question))

    async def articles(self, site_id: str) -> list[Any]:
        records, after = [], ""
        while True:
            page = await self.kernel.storage.list_records(site_id, KIND, after=after, limit=500)
            records.extend(page)
            if len(page) < 500:
                return records
            after = page[-1].id

    async def index(self, site_id: str) -> Index:
        settings = self.kernel.config.section("knowledge_base")
        cached = self._indexes.get(site_id)
        if cached is not None and time.monotonic() - cached[0] < settings.refresh_s:
            return cached[1]
        passages = []
        for record in await self.articles(site_id):
            d = record.data
            passages.extend(split_passages(record.id, d["title"], d.get("lang", "en"), d["body"]))
        weight = settings.vector_weight
        index = Index(passages, vectors=await self._passage_vectors(site_id, passages),
                      weight=weight)  # fmt: skip
        self._indexes[site_id] = (time.monotonic(), index)
        return index

    def changed(self, site_id: str) -> None:
        self._indexes.pop(site_id, None)


def library(kernel: Any) -> Library:
    return kernel.plugin_state(STATE, Library)


@hookimpl
def kefu_config_schema():
    return {"knowledge_base": KnowledgeBaseSettings}


@hookimpl
async def kefu_startup(kernel):
    # jieba's dictionary and pypinyin's tables load on first use: 1-6 s of CPU on this
    # machine, which the first search would spend on the event loop, stalling every
    # connection. Load them in a thread now; start-up does not wait for it.
    state = library(kernel)
    # The encoders' models (MiniLM, the Chinese word vectors) load in the same thread.
    state.encoders  # noqa: B018 (asked for on the loop: the hook call is not for a thread)
    state.warming = asyncio.get_running_loop().run_in_executor(None, state.warm)


@hookimpl
async def kefu_bot_knowledge(kernel, site_id, question, lang):
    if kernel.storage is None:
        return None
    hits = await library(kernel).search(site_id, question, 1)
    if not hits or hits[0].score < kernel.config.section("knowledge_base").min_score:
        return None
    p = hits[0].passage
    return KnowledgeAnswer(p.text, p.article_id, p.title, hits[0].score, p.lang)


@hookimpl
async def kefu_bot_passages(kernel, site_id, question, lang, limit):
    if kernel.storage is None:
        return None
    hits = await library(kernel).search(site_id, question, limit)
    return [KnowledgeAnswer(h.passage.text, h.passage.article_id, h.passage.title, h.score,
                            h.passage.lang) for h in hits]  # fmt: skip


async def count_feedback(storage: Any, site_id: str, article_id: str, helped: bool) -> None:
    """Add one answer to the article's counters (compare-and-set: several processes)."""
    key = "helped" if helped else "not_helped"
    for _attempt in range(20):
        record = await storage.get_record(site_id, FEEDBACK_KIND, article_id)
        data = dict(record.data) if record is not None else {"helped": 0, "not_helped": 0}
        data[key] = int(data.get(key, 0)) + 1
        try:
            await storage.put_record(site_id, FEEDBACK_KIND, article_id, data,
                                     expect_version=record.version if record else 0)  # fmt: skip
            return
        except VersionConflict:
            continue
    log.warning("feedback on article %s/%s not counted: kept changing", site_id, article_id)


@hookimpl
async def kefu_event(kernel, event):
    if event.type != "bot.knowledge_feedback" or kernel.storage is None or not event.site_id:
        return
    article_id = event.data.get("article_id")
    if isinstance(article_id, str) and article_id:
        await count_feedback(kernel.storage, event.site_id, article_id, bool(event.data["helped"]))


def _out(record: Any, feedback: dict[str, int] | None = None) -> ArticleOut:
    return ArticleOut(id=record.id, version=record.version, **record.data, **(feedback or {}))


async def list_articles(call: Any) -> ArticleList:
    await call.require("conversation.read", call.site_id)
    storage = call.kernel.storage
    feedback = {}
    after = ""
    while page := await storage.list_records(call.site_id, FEEDBACK_KIND, after=after, limit=500):
        feedback.update({r.id: r.data for r in page})
        after = page[-1].id
    articles = await library(call.kernel).articles(call.site_id)
    return ArticleList(articles=[_out(r, feedback.get(r.id)) for r in articles])


async def get_article(call: Any) -> ArticleOut:
    await call.require("conversation.read", call.site_id)
    record = await call.kernel.storage.get_record(call.site_id, KIND, call.params["id"])
    if record is None:
        raise ApiError(404, "article_not_found", "no such article in this site")
    feedback = await call.kernel.storage.get_record(call.site_id, FEEDBACK_KIND, record.id)
    return _out(record, feedback.data if feedback is not None else None)


async def put_article(call: Any) -> ArticleOut:
    await call.require("sites.manage", call.site_id)
    record = await call.kernel.storage.put_record(
        call.site_id, KIND, call.params["id"], call.body.model_dump()
    )
    library(call.kernel).changed(call.site_id)
    return _out(record)


async def delete_article(call: Any) -> None:
    await call.require("sites.manage", call.site_id)
    if not await call.kernel.storage.delete_record(call.site_id, KIND, call.params["id"]):
        raise ApiError(404, "article_not_found", "no such article in this site")
    library(call.kernel).changed(call.site_id)


async def search(call: Any) -> SearchResult:
    await call.require("conversation.read", call.site_id)
    lib = library(call.kernel)
    min_score = call.kernel.config.section("knowledge_base").min_score
    if not lib.suggestions:  # shed under pressure (degradation level 2): no search at all
        return SearchResult(hits=[], min_score=min_score, shed=True)
    hits = await lib.search(call.site_id, call.query.q, call.query.limit)
    return SearchResult(
        hits=[
            SearchHit(
                article_id=h.passage.article_id,
                title=h.passage.title,
                heading=h.passage.heading,
                passage=h.passage.text,
                score=round(h.score, 4),
            )
            for h in hits
        ],
        min_score=min_score,
    )


@hookimpl
def kefu_degradation_features(kernel):
    lib = library(kernel)

    def set_enabled(enabled: bool) -> None:
        lib.suggestions = bool(enabled)

    return [
        DegradableFeature(
            "kb_suggestions",
            35,
            set_enabled,
            2,
            "no article search for the console's suggestions (/v1/kb/search answers shed)",
        )
    ]


@hookimpl
def kefu_rest_endpoints(kernel):
    ids = {"id": ID_PATTERN}
    return [
        RestEndpoint("GET", "/v1/kb/articles", "list_kb_articles", "List help articles",
                     "knowledge base", list_articles, response=ArticleList),
        RestEndpoint("GET", "/v1/kb/articles/{id}", "get_kb_article", "Read a help article",
                     "knowledge base", get_article, response=ArticleOut, errors=(404,),
                     path_patterns=ids),
        RestEndpoint("PUT", "/v1/kb/articles/{id}", "put_kb_article",
                     "Create or replace a help article", "knowledge base", put_article,
                     response=ArticleOut, body=ArticleIn, path_patterns=ids,
                     description="Admins of the site. Markdown body, `lang` en or zh; the "
                     "bot answers from it at once in this process."),
        RestEndpoint("DELETE", "/v1/kb/articles/{id}", "delete_kb_article",
                     "Delete a help article", "knowledge base", delete_article, status=204,
                     errors=(404,), path_patterns=ids),
        RestEndpoint("GET", "/v1/kb/search", "search_kb", "Search help articles",
                     "knowledge base", search, response=SearchResult, query=SearchQuery,
                     description="The best passage of each matching article, best first: "
                     "what the console suggests to an agent for the visitor's question."),
    ]  # fmt: skip
