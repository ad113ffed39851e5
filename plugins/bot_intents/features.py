"""Text features that need no word segmentation: word n-grams plus character n-grams.

English (and any space-separated script) gets word 1-2 grams; Chinese, Japanese and
other unsegmented text gets one token per ideograph, so that its "word" bigrams are
character bigrams. Character n-grams (``char_wb``) add robustness to typos and
inflection in every script. Each block is TF-IDF weighted with sublinear term
frequency and L2-normalised; the blocks are concatenated.

Every callable here is defined at module level so that a fitted vectoriser pickles and
can be built in a worker process.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion

from kefu.core.text import cjk_share, expand_glossary, pinyin_text, segment
from kefu.core.text import normalize_text as _normalize

log = logging.getLogger(__name__)

# One token per CJK ideograph / kana / hangul syllable; otherwise runs of letters and
# digits with an optional apostrophe part ("what's", "don't").
_TOKEN = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]"
    r"|[^\W_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+"
    r"(?:'[^\W_]+)?",
    re.UNICODE,
)


def normalize_text(text: str) -> str:
    """NFKC-fold (full-width letters and digits become ASCII), lower-case, traditional
    Chinese to simplified (:func:`kefu.core.text.normalize_text`)."""
    return _normalize(text)


_SPACES = re.compile(r"\s+")


def pinyin_preprocess(text: str) -> str:
    """Normalised text with its Chinese characters spelled in toneless pinyin, spaces
    removed: a Chinese run is spelled as one string (订单到哪了 -> ``dingdandaonale``), so a
    visitor typing ``dingdan dao na le`` must meet it without the spaces too."""
    return _SPACES.sub("", pinyin_text(_normalize(text)))


def chinese_preprocess(text: str) -> str:
    """Normalised text with the Chinese words of its English glossary words appended
    (:func:`kefu.core.text.expand_glossary`): the preprocessing of every block when the
    Chinese blocks are on."""
    return expand_glossary(_normalize(text))


def chinese_pinyin_preprocess(text: str) -> str:
    """:func:`chinese_preprocess`, then spelled in toneless pinyin, spaces removed (as
    :func:`pinyin_preprocess`)."""
    return _SPACES.sub("", pinyin_text(chinese_preprocess(text)))


def tokenize(text: str) -> list[str]:
    """Split already-normalised text into word tokens, one per CJK character."""
    return _TOKEN.findall(text)


@dataclass(frozen=True)
class FeatureConfig:
    """Which n-gram blocks to build. The defaults were chosen on CLINC150 ``val``."""

    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (1, 4)
    char_weight: float = 1.0
    min_df: int = 1
    #: Chinese blocks (jieba words, pinyin character n-grams): ``None`` decides from the
    #: training texts (:func:`resolve_chinese`), so Latin-script data keeps two blocks.
    chinese: bool | None = None
    segment_weight: float = 1.0
    pinyin_ngrams: tuple[int, int] = (1, 4)
    pinyin_weight: float = 1.0
    #: With ``chinese=None``: the share of training texts holding Chinese characters.
    chinese_min_share: float = 0.3
    #: With the Chinese blocks: append the Chinese words of English glossary words
    #: (``kefu.core.glossary``) before every block, so ``points怎么用`` meets 积分. ``None``
    #: decides from the training texts: on when at least ``glossary_min_share`` of them hold
    #: Chinese (a Chinese site's flow; a bilingual one keeps its English examples English).
    glossary: bool | None = None
    glossary_min_share: float = 0.5


def resolve_chinese(config: FeatureConfig, texts) -> FeatureConfig:
    """``config`` with ``chinese`` and ``glossary`` decided from the training texts where
    they are ``None``."""
    if config.chinese is not None and config.glossary is not None:
        return config
    share = cjk_share(texts)
    chinese = share >= config.chinese_min_share if config.chinese is None else config.chinese
    glossary = share >= config.glossary_min_share if config.glossary is None else config.glossary
    return replace(config, chinese=chinese, glossary=glossary)


def build_vectorizer(config: FeatureConfig | None = None) -> FeatureUnion:
    """Return an unfitted union of the word and character TF-IDF blocks."""
    config = config or FeatureConfig()
    glossary = bool(config.chinese and config.glossary)
    preprocess = chinese_preprocess if glossary else normalize_text
    word = TfidfVectorizer(
        preprocessor=preprocess,
        tokenizer=tokenize,
        token_pattern=None,
        lowercase=False,
        ngram_range=config.word_ngrams,
        sublinear_tf=True,
        min_df=config.min_df,
        dtype=np.float32,
    )
    char = TfidfVectorizer(
        preprocessor=preprocess,
        analyzer="char_wb",
        lowercase=False,
        ngram_range=config.char_ngrams,
        sublinear_tf=True,
        min_df=config.min_df,
        dtype=np.float32,
    )
    blocks = [("word", word), ("char", char)]
    weights = {"word": 1.0, "char": config.char_weight}
    if config.chinese:
        blocks.append(
            (
                "segment",
                TfidfVectorizer(
                    preprocessor=preprocess,
                    tokenizer=segment,
                    token_pattern=None,
                    lowercase=False,
                    ngram_range=(1, 2),
                    sublinear_tf=True,
                    min_df=config.min_df,
                    dtype=np.float32,
                ),
            )
        )
        blocks.append(
            (
                "pinyin",
                TfidfVectorizer(
                    preprocessor=chinese_pinyin_preprocess if glossary else pinyin_preprocess,
                    analyzer="char_wb",
                    lowercase=False,
                    ngram_range=config.pinyin_ngrams,
                    sublinear_tf=True,
                    min_df=config.min_df,
                    dtype=np.float32,
                ),
            )
        )
        weights.update(segment=config.segment_weight, pinyin=config.pinyin_weight)
    return FeatureUnion(blocks, transformer_weights=weights)


class SingleTextFeatures:
    """The fitted union's features for one text, without scikit-learn's per-call overhead.

    ``transform`` on a one-row batch spends most of a millisecond in input validation
    and the union's bookkeeping; this reproduces the same numbers (counts, sublinear tf,
    idf, per-block L2 norm, block weight) from the fitted vocabularies directly.
    """

    def __init__(self, union: FeatureUnion) -> None:
        self._blocks = []
        offset = 0
        weights = union.transformer_weights or {}
        for name, vectorizer in union.transformer_list:
            self._blocks.append(
                (
                    vectorizer.build_analyzer(),
                    vectorizer.vocabulary_,
                    vectorizer.idf_.astype(np.float64),
                    offset,
                    float(weights.get(name, 1.0)),
                    vectorizer.sublinear_tf,
                )
            )
            offset += len(vectorizer.vocabulary_)
        self.n_features = offset

    def transform(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and values of ``text``'s non-zero features."""
        all_indices: list[np.ndarray] = []
        all_values: list[np.ndarray] = []
        for analyze, vocabulary, idf, offset, weight, sublinear in self._blocks:
            counts: dict[int, int] = {}
            for gram in analyze(text):
                column = vocabulary.get(gram)
                if column is not None:
                    counts[column] = counts.get(column, 0) + 1
            if not counts:
                continue
            columns = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            if sublinear:
                tf = np.log(tf) + 1.0
            values = tf * idf[columns]
            values *= weight / np.sqrt(values @ values)
            all_indices.append(columns + offset)
            all_values.append(values)
        if not all_indices:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float64)
        return np.concatenate(all_indices), np.concatenate(all_values)
