"""FAQ mining: cluster the visitors' questions of stored conversations, rank the clusters.

:func:`collect_questions` reads a site's conversations from storage: every visitor text
message is a question, with the bot's outcome for it (``conversation.meta["bot_turns"]``,
written by :func:`record_turn` on every bot turn) and the first agent reply after it
(unless the visitor spoke again first). :func:`mine` (pure CPU, run it in a worker
thread) does the rest:

1. **Normalise**: NFKC, lower case; e-mail addresses, URLs and numbers become the
   placeholders ``{email}``, ``{url}``, ``{num}``; punctuation and symbols go; spaces
   collapse. Questions equal after this are one *unique question* with a count.
2. **Vectors**: TF-IDF of word 1-2 grams (one token per CJK character, so Chinese needs
   no segmentation) and ``char_wb`` 2-4 grams over the unique questions, reduced by a
   truncated SVD (LSA) to ``dims`` dimensions and L2-normalised. Chinese questions
   (:func:`is_chinese`) get the intent classifier's Chinese blocks (characters, jieba
   words, pinyin) over their :func:`content_words` instead, and ``min_cohesion_chinese``.
3. **Near-duplicates and scale**: beyond ``max_exact`` unique questions, a weighted
   mini-batch k-means first groups them into ``max_exact`` micro-clusters of near-duplicates.
4. **Smoothing**: each vector becomes the similarity-weighted mean of its ``neighbours``
   nearest (itself included), so paraphrases that share neighbours come closer.
5. **Clusters**: average-linkage agglomerative clustering (cosine) cut where the average
   similarity between two groups falls below ``threshold``; a cluster whose questions are
   diffuse (the length of the mean of their unsmoothed unit vectors, weighted by count,
   below ``min_cohesion``: a mix of rare questions rather than one) is cut again 0.1
   higher, until every cluster is cohesive or the cut reaches 0.9.
6. **Ranking**: by the number of questions; each cluster gets its trend (the last
   ``window_days`` against the window before), the bot's failure rate on its questions
   (turns that fell back or handed off, of the turns the bot took), representative
   questions (closest to the centroid) and the agents' most common answer (normalised
   the same way; the most frequent form, with one of its original texts).

``docs/bot.md`` ("FAQ mining") describes the CLI, the endpoints and the measured recovery
on a Zipf-sampled CLINC150 log.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: ``conversation.meta`` key of the per-turn outcomes: {visitor message seq: outcome}.
TURNS_KEY = "bot_turns"
MAX_RECORDED_TURNS = 200  # per conversation; the oldest are dropped

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_PLACEHOLDERS = {"\ue000": "{email}", "\ue001": "{url}", "\ue002": "{num}"}
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"\{{(?:email|url|num)\}}|[{_CJK}]|[^\W_{_CJK}]+(?:'[^\W_]+)?")

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def no_progress(stage: str, done: int, total: int) -> None:
    return None


def normalize_question(text: str) -> str:
    """The form in which questions are compared (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = _EMAIL.sub(" \ue000 ", text)
    text = _URL.sub(" \ue001 ", text)
    text = _NUMBER.sub(" \ue002 ", text)
    out = []
    for ch in text:
        if ch in _PLACEHOLDERS:
            out.append(_PLACEHOLDERS[ch])
        elif ch == "'" or ch.isspace():
            out.append(ch)
        elif unicodedata.category(ch)[0] in "PSC":  # punctuation, symbols, controls
            out.append(" ")
        else:
            out.append(ch)
    return " ".join("".join(out).split())


def tokens(normalized: str) -> list[str]:
    """Word tokens of a normalised question: one per CJK character, placeholders whole."""
    return _TOKEN.findall(normalized)


# ---------------------------------------------------------------------------
# The bot's outcome per turn (written by the service, read by the miner)
# ---------------------------------------------------------------------------


def turn_outcome(matched: str | None, handoff: bool) -> str:
    """``fallback``, ``handoff`` (any turn that handed off) or what matched."""
    if handoff:
        return "handoff"
    return matched or "answered"


def record_turn(conversation: Any, seq: int, matched: str | None, handoff: bool) -> None:
    """Note the bot's outcome for the visitor message ``seq`` in ``conversation.meta``
    (the caller saves the conversation)."""
    turns = conversation.meta.get(TURNS_KEY)
    turns = dict(turns) if isinstance(turns, dict) else {}
    turns[str(seq)] = turn_outcome(matched, handoff)
    while len(turns) > MAX_RECORDED_TURNS:
        turns.pop(next(iter(turns)))
    conversation.meta = {**conversation.meta, TURNS_KEY: turns}


def failed(outcome: str | None) -> bool:
    """Did the bot fail on a question: it fell back (did not understand) or handed off."""
    return outcome in ("fallback", "handoff")


# ---------------------------------------------------------------------------
# Reading questions from storage
# ---------------------------------------------------------------------------


@dataclass
class Question:
    text: str
    created_at: float
    conversation_id: str
    seq: int
    bot: str | None = None  # the bot's outcome for it (None: the bot did not answer it)
    answer: str | None = None  # the first agent reply after it


async def collect_questions(
    storage: Any,
    site_id: str,
    *,
    since: float | None = None,
    until: float | None = None,
    progress: Progress = no_progress,
    page: int = 500,
) -> tuple[list[Question], int]:
    """The visitor questions of a site's conversations (``since`` <= created_at < ``until``)
    and the number of conversations read."""
    from kefu.plugins.bot_intents.abtests import iter_conversations

    questions: list[Question] = []
    scanned = 0
    async for conversation in iter_conversations(storage, site_id):
        if since is not None and conversation.updated_at < since:
            break  # newest updated first: every later one is older
        scanned += 1
        if scanned % 1000 == 0:
            progress("reading conversations", scanned, 0)
        outcomes = conversation.meta.get(TURNS_KEY)
        outcomes = outcomes if isinstance(outcomes, dict) else {}
        pending: Question | None = None
        after = 0
        while True:
            messages = await storage.list_messages(
                site_id, conversation.id, after_seq=after, limit=page
            )
            for message in messages:
                after = message.seq
                if message.type != "text" or not (message.text or "").strip():
                    continue
                if message.sender_kind == "visitor":
                    pending = None
                    if since is not None and message.created_at < since:
                        continue
                    if until is not None and message.created_at >= until:
                        continue
                    pending = Question(
                        message.text,
                        message.created_at,
                        conversation.id,
                        message.seq,
                        outcomes.get(str(message.seq)),
                    )
                    questions.append(pending)
                elif message.sender_kind == "agent" and pending is not None:
                    pending.answer = message.text
                    pending = None
            if len(messages) < page:
                break
    progress("reading conversations", scanned, scanned)
    return questions, scanned


# ---------------------------------------------------------------------------
# Mining
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MiningOptions:
    """How questions are clustered and reported. Defaults measured on CLINC150 (docs/bot.md)."""

    threshold: float = 0.2  # average cosine similarity below which groups stay apart
    dims: int = 300  # LSA dimensions
    neighbours: int = 20  # smoothing: each vector becomes the mean of its nearest (0: off)
    min_cohesion: float = 0.5  # diffuse clusters (mean vector shorter) are cut finer
    max_exact: int = 6000  # unique questions clustered one by one; more: micro-clusters first
    window_days: float = 7.0  # trend: this window against the one before
    now: float | None = None  # the end of the recent window (default: the time of mining)
    top: int = 20  # clusters reported
    min_size: int = 2  # smaller clusters are not reported
    representatives: int = 5
    examples: int = 50  # distinct questions kept per cluster (publishing uses them)
    seed: int = 0
    members: bool = False  # report each cluster's question indexes (tests, evaluation)
    #: sentence embeddings beside the n-gram LSA: "auto" (the installed MiniLM, for mostly
    #: Latin-script questions), "none", or a model folder (embeddings.py)
    embedding_model: str = "auto"
    embedding_layers: int = 0  # all blocks: raw similarity needs the model's last layer
    embedding_weight: float = 1.0  # the embedding block's share beside the LSA block
    #: ``min_cohesion`` for Chinese questions (their n-gram vectors are more diffuse)
    min_cohesion_chinese: float = 0.4


@dataclass
class Cluster:
    id: str
    size: int
    share: float
    unique: int
    recent: int
    previous: int
    trend: float | None
    bot_turns: int
    bot_failures: int
    failure_rate: float | None
    representatives: list[dict[str, Any]]
    examples: list[str]
    agent_answer: dict[str, Any] | None
    suggested_intent: str
    members: list[int] = field(default_factory=list, repr=False)  # question indexes

    def as_dict(self, members: bool = False) -> dict[str, Any]:
        out = dict(self.__dict__)
        if not members:
            out.pop("members")
        return out


def is_chinese(texts: Sequence[str]) -> bool:
    """Whether questions get the Chinese features: as the intent classifier decides for
    its training texts (at least 30% of them hold Chinese characters)."""
    from kefu.plugins.bot_intents.features import FeatureConfig, resolve_chinese

    return bool(resolve_chinese(FeatureConfig(), texts).chinese)


#: Single-character words dropped from Chinese questions before their n-grams: particles,
#: pronouns and the commonest verbs, which every intent shares (的 / 了 / 吗 / 我 / 能…).
#: Only where jieba cuts them out as words of their own, so 地址 and 下单 stay whole.
_ZH_FUNCTION_CHARS = frozenset(
    "吗呢吧啊呀哦哈嘛啦么了的得地我你您他她们是在有和就都也还要想请问一下个这那"
)


def content_words(text: str) -> str:
    """A normalised question's jieba words without :data:`_ZH_FUNCTION_CHARS`, space-joined
    (the text itself when nothing would be left)."""
    from kefu.core.text import normalize_text, segment

    words = [w for w in segment(normalize_text(text)) if w not in _ZH_FUNCTION_CHARS]
    return " ".join(words) or text


def _vectors(texts: Sequence[str], options: MiningOptions, chinese: bool = False) -> np.ndarray:
    """Unit rows: the questions' n-gram LSA vectors, with their sentence embeddings beside
    them when a model is available (see :class:`MiningOptions`)."""
    from kefu.plugins.bot_intents.classifier import TrainingOptions, choose_encoder

    lsa = (_chinese_lsa_vectors if chinese else _lsa_vectors)(texts, options.dims, options.seed)
    encoder = choose_encoder(
        TrainingOptions(
            embedding_model=options.embedding_model, embedding_layers=options.embedding_layers
        ),
        texts,
        word_vectors=False,  # FAQ clusters of Chinese questions: n-gram LSA, as measured
    )
    if encoder is None or options.embedding_weight <= 0:
        return lsa
    joined = np.hstack([lsa, encoder.encode(texts) * options.embedding_weight])
    return (joined / np.linalg.norm(joined, axis=1, keepdims=True)).astype(np.float32)


def _lsa_vectors(texts: Sequence[str], dims: int, seed: int) -> np.ndarray:
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    word = TfidfVectorizer(
        tokenizer=tokens, token_pattern=None, lowercase=False, ngram_range=(1, 2),
        sublinear_tf=True, dtype=np.float32,
    )  # fmt: skip
    char = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(2, 4), lowercase=False, sublinear_tf=True,
        dtype=np.float32,
    )  # fmt: skip
    blocks = []
    for vectorizer in (word, char):
        try:
            blocks.append(vectorizer.fit_transform(texts))
        except ValueError:  # an empty vocabulary (e.g. only placeholders)
            continue
    if not blocks:
        return np.ones((len(texts), 1), dtype=np.float32)
    return _lsa(normalize(sparse.hstack(blocks).tocsr()), dims, seed)


def _chinese_lsa_vectors(texts: Sequence[str], dims: int, seed: int) -> np.ndarray:
    """The intent classifier's Chinese n-gram blocks (characters, jieba words, pinyin;
    traditional folded, glossary words added) over the questions' :func:`content_words`,
    reduced like :func:`_lsa_vectors`."""
    from sklearn.preprocessing import normalize

    from kefu.plugins.bot_intents.features import FeatureConfig, build_vectorizer, resolve_chinese

    content = [content_words(t) for t in texts]
    vectorizer = build_vectorizer(resolve_chinese(FeatureConfig(chinese=True), texts))
    try:
        matrix = vectorizer.fit_transform(content)
    except ValueError:  # an empty vocabulary
        return np.ones((len(texts), 1), dtype=np.float32)
    return _lsa(normalize(matrix.tocsr()), dims, seed)


def _lsa(matrix, dims: int, seed: int) -> np.ndarray:
    """Unit rows of the truncated SVD of the L2-normalised sparse ``matrix``."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    k = min(dims, matrix.shape[0] - 1, matrix.shape[1] - 1)
    if k >= 2:
        dense = TruncatedSVD(k, random_state=seed).fit_transform(matrix)
    else:
        dense = matrix.toarray()
    dense = normalize(dense).astype(np.float32)
    dense[np.linalg.norm(dense, axis=1) == 0] = 1.0 / np.sqrt(dense.shape[1])
    return dense


def _smooth(vectors: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Each row replaced by the similarity-weighted mean of its ``k`` nearest rows (itself
    included), L2-normalised: paraphrases that share neighbours move closer together."""
    if k <= 1 or len(vectors) <= k:
        return vectors
    out = np.empty_like(vectors)
    for start in range(0, len(vectors), chunk):
        sims = vectors[start : start + chunk] @ vectors.T
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        weights = np.maximum(np.take_along_axis(sims, nearest, 1), 0.0)
        out[start : start + chunk] = np.einsum("ik,ikd->id", weights, vectors[nearest])
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.where(norms > 0, out / np.maximum(norms, 1e-12), vectors)


def _average_linkage(
    vectors: np.ndarray,
    threshold: float,
    cohesive: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    min_cohesion: float = 0.0,
) -> np.ndarray:
    """Cluster labels of the rows cut at average cosine similarity ``threshold``.

    A cluster whose ``cohesive`` rows (unit vectors, weighted) have a mean shorter than
    ``min_cohesion`` (a diffuse mix rather than one question) is replaced by its parts cut
    at a higher threshold (+0.1 per step, up to 0.9).
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(vectors) == 1:
        return np.zeros(1, dtype=np.intp)
    tree = linkage(vectors.astype(np.float64), method="average", metric="cosine")
    labels = fcluster(tree, 1.0 - threshold, criterion="distance") - 1
    if cohesive is None or weights is None or min_cohesion <= 0:
        return labels
    level = threshold
    while level < 0.9:
        sums = np.zeros((labels.max() + 1, cohesive.shape[1]))
        np.add.at(sums, labels, cohesive * weights[:, None])
        totals = np.bincount(labels, weights=weights)
        cohesion = np.linalg.norm(sums, axis=1) / np.maximum(totals, 1e-12)
        diffuse = (cohesion < min_cohesion) & (np.bincount(labels) > 1)
        if not diffuse.any():
            break
        level = min(level + 0.1, 0.9)
        finer = fcluster(tree, 1.0 - level, criterion="distance") - 1
        split = diffuse[labels]
        labels = np.where(split, labels.max() + 1 + finer, labels)
        labels = np.unique(labels, return_inverse=True)[1]
    return labels


def _micro_clusters(
    vectors: np.ndarray, weights: np.ndarray, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Group rows into ``k`` micro-clusters: (label per row, normalised centroids)."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.preprocessing import normalize

    model = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=4096, n_init=1, max_iter=20)
    labels = model.fit_predict(vectors, sample_weight=weights)
    used = np.unique(labels)
    remap = np.full(k, -1, dtype=np.intp)
    remap[used] = np.arange(len(used))
    labels = remap[labels]
    centroids = np.zeros((len(used), vectors.shape[1]), dtype=np.float64)
    np.add.at(centroids, labels, vectors * weights[:, None])
    return labels, normalize(centroids).astype(np.float32)


def _intent_name(words: Iterable[str]) -> str:
    picked = [w for w in words if re.fullmatch(r"[a-z0-9]+", w)][:3]
    return "faq_" + "_".join(picked) if picked else "faq_question"


def mine(
    questions: Sequence[Question],
    options: MiningOptions | None = None,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Cluster ``questions`` and describe the ``top`` clusters (see the module docstring)."""
    options = options or MiningOptions()
    started = time.perf_counter()
    now = options.now if options.now is not None else time.time()
    window = options.window_days * 86400.0
    keys: dict[str, int] = {}
    key_of = np.empty(len(questions), dtype=np.intp)
    raw_forms: list[Counter] = []
    for i, question in enumerate(questions):
        key = normalize_question(question.text)
        index = keys.setdefault(key, len(keys))
        if index == len(raw_forms):
            raw_forms.append(Counter())
        raw_forms[index][question.text.strip()] += 1
        key_of[i] = index
    texts = list(keys)
    report: dict[str, Any] = {
        "questions": len(questions),
        "unique_questions": len(texts),
        "clusters": [],
        "window_days": options.window_days,
        "now": now,
        "options": {k: v for k, v in options.__dict__.items() if k != "now"},
    }
    if not texts:
        report["seconds"] = round(time.perf_counter() - started, 3)
        return report
    weights = np.bincount(key_of, minlength=len(texts)).astype(np.float64)
    chinese = is_chinese(texts)
    min_cohesion = options.min_cohesion_chinese if chinese else options.min_cohesion
    report["chinese"] = chinese
    progress("vectorising", 0, len(texts))
    vectors = _vectors(texts, options, chinese)
    progress("vectorising", len(texts), len(texts))
    if len(texts) > options.max_exact:
        progress("grouping near-duplicates", 0, len(texts))
        micro, centroids = _micro_clusters(vectors, weights, options.max_exact, options.seed)
        progress("grouping near-duplicates", len(texts), len(texts))
        progress("clustering", 0, len(centroids))
        mass = np.bincount(micro, weights=weights)
        unique_label = _average_linkage(
            _smooth(centroids, options.neighbours), options.threshold, centroids, mass,
            min_cohesion,
        )[micro]  # fmt: skip
        progress("clustering", len(centroids), len(centroids))
    else:
        progress("clustering", 0, len(texts))
        unique_label = _average_linkage(
            _smooth(vectors, options.neighbours), options.threshold, vectors, weights,
            min_cohesion,
        )  # fmt: skip
        progress("clustering", len(texts), len(texts))
    label = unique_label[key_of]
    sizes = np.bincount(label)
    order = [int(c) for c in np.argsort(-sizes, kind="stable") if sizes[c] >= options.min_size]
    report["clusters_found"] = int((sizes > 0).sum())
    for c in order[: options.top]:
        report["clusters"].append(
            _describe(c, questions, label, unique_label, key_of, texts, raw_forms, weights,
                      vectors, now, window, options).as_dict(options.members)
        )  # fmt: skip
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def _describe(
    c: int,
    questions: Sequence[Question],
    label: np.ndarray,
    unique_label: np.ndarray,
    key_of: np.ndarray,
    texts: list[str],
    raw_forms: list[Counter],
    weights: np.ndarray,
    vectors: np.ndarray,
    now: float,
    window: float,
    options: MiningOptions,
) -> Cluster:
    members = np.flatnonzero(label == c)
    uniques = np.flatnonzero(unique_label == c)
    centroid = (vectors[uniques] * weights[uniques, None]).sum(0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    closeness = vectors[uniques] @ centroid
    by_closeness = uniques[np.argsort(-closeness, kind="stable")]
    representatives = [
        {"text": raw_forms[u].most_common(1)[0][0], "count": int(weights[u]),
         "similarity": round(float(vectors[u] @ centroid), 3)}
        for u in by_closeness[: options.representatives]
    ]  # fmt: skip
    by_count = uniques[np.argsort(-weights[uniques], kind="stable")]
    examples = [raw_forms[u].most_common(1)[0][0] for u in by_count[: options.examples]]
    recent = previous = bot_turns = bot_failures = 0
    answers: Counter = Counter()
    answer_text: dict[str, Counter] = {}
    for i in members:
        q = questions[i]
        age = now - q.created_at
        if 0 <= age < window:
            recent += 1
        elif window <= age < 2 * window:
            previous += 1
        if q.bot is not None:
            bot_turns += 1
            bot_failures += failed(q.bot)
        if q.answer:
            key = normalize_question(q.answer)
            if key:
                answers[key] += 1
                answer_text.setdefault(key, Counter())[q.answer.strip()] += 1
    agent_answer = None
    if answers:
        key, count = answers.most_common(1)[0]
        agent_answer = {
            "text": answer_text[key].most_common(1)[0][0],
            "count": count,
            "answered": sum(answers.values()),
            "share": round(count / sum(answers.values()), 4),
        }
    top_words = Counter()
    for u in uniques:
        for w in set(tokens(texts[u])):
            top_words[w] += int(weights[u])
    common = [w for w, n in top_words.most_common() if n >= 0.3 * len(members) and len(w) > 2]
    digest = hashlib.sha256(texts[by_closeness[0]].encode("utf-8")).hexdigest()[:12]
    total = len(questions)
    return Cluster(
        id=digest,
        size=len(members),
        share=round(len(members) / total, 4),
        unique=len(uniques),
        recent=recent,
        previous=previous,
        trend=None if previous == 0 else round((recent - previous) / previous, 4),
        bot_turns=bot_turns,
        bot_failures=bot_failures,
        failure_rate=None if bot_turns == 0 else round(bot_failures / bot_turns, 4),
        representatives=representatives,
        examples=examples,
        agent_answer=agent_answer,
        suggested_intent=_intent_name(common),
        members=[int(i) for i in members],
    )


async def mine_site(
    storage: Any,
    site_id: str,
    options: MiningOptions | None = None,
    *,
    since: float | None = None,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Read a site's questions and mine them in a worker thread (the loop stays free)."""
    import asyncio

    options = options or MiningOptions()
    if options.now is None:
        options = MiningOptions(**{**options.__dict__, "now": time.time()})
    questions, scanned = await collect_questions(storage, site_id, since=since, progress=progress)
    report = await asyncio.to_thread(mine, questions, options, progress)
    report["site_id"] = site_id
    report["since"] = since
    report["conversations"] = scanned
    return report
