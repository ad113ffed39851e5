"""Passage retrieval over a site's articles: BM25 over words and Chinese character bigrams,
plus sentence vectors when a plugin offers an encoder (hybrid retrieval).

Articles are Markdown; each is cut into passages at its headings (a passage keeps its
article's title as context). A passage's terms are the words of
:func:`kefu.core.text.segment` (jieba for Chinese, letter runs otherwise) plus, for
Chinese, character bigrams, all on :func:`kefu.core.text.normalize_text` (traditional
folded to simplified). Scores are Okapi BM25 (k1 1.2, b 0.75); with vectors (an
:class:`kefu.core.types.TextEncoder` per language, ``kefu_bot_text_encoders``) a passage
of the question's language adds ``weight * max(0, cosine - floor)``, so a paraphrase that
shares no word with the article still finds it. An article's score is its best
passage's. The index is immutable: rebuild it when the articles change.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from kefu.core.text import has_cjk, normalize_text, pinyin_text, segment

_HEADING = re.compile(r"^#{1,6}\s+(.*)$", re.MULTILINE)
_STOP = frozenset(
    "the a an is are do does i my me to of and or for in on how what can you your it "
    "我 的 了 吗 呢 啊 吧 是 怎么 怎样 什么 可以 能 请问 一下 你们".split()
)


def terms(text: str) -> list[str]:
    """Index terms: words, a 5-letter prefix of longer Latin words (track/tracking), and
    for Chinese the characters, their bigrams and each word's pinyin (so ``wangji mima``
    finds 忘记密码)."""
    norm = normalize_text(text)
    words = [w for w in segment(norm) if w not in _STOP]
    out = list(words)
    for w in words:
        if has_cjk(w):
            out.append("py:" + pinyin_text(w))
        else:
            out.append("py:" + w)
            if len(w) >= 5 and w.isalpha():
                out.append("p5:" + w[:5])
    if has_cjk(norm):
        for run in re.findall(r"[\u3400-\u9fff]+", norm):
            out.extend(c for c in run if c not in _STOP)
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
    return out


@dataclass(frozen=True)
class Passage:
    article_id: str
    title: str
    lang: str
    heading: str
    text: str


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float


def split_passages(article_id: str, title: str, lang: str, body: str) -> list[Passage]:
    """An article's passages: the text under each heading (the intro under the title)."""
    passages: list[Passage] = []
    marks = list(_HEADING.finditer(body))
    starts = [(0, "")] + [(m.end(), m.group(1).strip()) for m in marks]
    ends = [m.start() for m in marks] + [len(body)]
    for (start, heading), end in zip(starts, ends, strict=True):
        text = body[start:end].strip()
        if text:
            passages.append(Passage(article_id, title, lang, heading, text))
    return passages or [Passage(article_id, title, lang, "", title)]


def passage_text(p: Passage) -> str:
    """What a passage's sentence vector is made of."""
    return f"{p.title}. {p.heading}. {p.text}" if p.heading else f"{p.title}. {p.text}"


def question_lang(text: str) -> str:
    """The language whose passages a question is compared with by meaning."""
    return "zh" if has_cjk(text) else "en"


@dataclass(frozen=True)
class Vectors:
    """The sentence vectors of an index's passages of one language."""

    rows: list[int]  # the passages' positions in the index
    matrix: Any  # (len(rows), dim), L2-normalised
    floor: float  # the encoder's cosine of unrelated texts


class Index:
    """BM25 over passages (plus ``vectors`` per language, :class:`Vectors`); ``search``
    returns the best passage per article, best first."""

    def __init__(
        self,
        passages: list[Passage],
        k1: float = 1.2,
        b: float = 0.75,
        vectors: dict[str, Vectors] | None = None,
        weight: float = 10.0,
    ) -> None:
        self.passages = passages
        self.vectors = vectors or {}
        self.weight = weight
        self._k1, self._b = k1, b
        self._tf: list[Counter] = []
        df: Counter = Counter()
        for p in passages:
            tf = Counter(terms(f"{p.title} {p.heading} {p.heading} {p.text}"))
            self._tf.append(tf)
            df.update(tf.keys())
        self._len = [sum(tf.values()) for tf in self._tf]
        self._avg = (sum(self._len) / len(self._len)) if self._len else 1.0
        n = len(passages)
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self._postings: dict[str, list[int]] = {}
        for i, tf in enumerate(self._tf):
            for t in tf:
                self._postings.setdefault(t, []).append(i)

    def search(self, query: str, limit: int = 3, query_vector: Any = None) -> list[Hit]:
        """``query_vector``: the question's sentence vector from the encoder of
        :func:`question_lang` (None: words only)."""
        scores: dict[int, float] = {}
        dense = self.vectors.get(question_lang(query)) if query_vector is not None else None
        if dense is not None and len(dense.rows):
            cosines = dense.matrix @ query_vector
            for i, cosine in zip(dense.rows, cosines.tolist(), strict=True):
                if cosine > dense.floor:
                    scores[i] = self.weight * (cosine - dense.floor)
        k1, b = self._k1, self._b
        for t in set(terms(query)):
            idf = self._idf.get(t)
            if idf is None:
                continue
            for i in self._postings[t]:
                f = self._tf[i][t]
                norm = k1 * (1 - b + b * self._len[i] / self._avg)
                scores[i] = scores.get(i, 0.0) + idf * f * (k1 + 1) / (f + norm)
        best: dict[str, Hit] = {}
        for i, s in scores.items():
            p = self.passages[i]
            if p.article_id not in best or best[p.article_id].score < s:
                best[p.article_id] = Hit(p, s)
        return sorted(best.values(), key=lambda h: -h.score)[:limit]
