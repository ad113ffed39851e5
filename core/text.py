"""Text helpers shared by the bot and the knowledge base: Chinese next to any other script.

- :func:`normalize_text`: NFKC fold (full-width letters and digits become ASCII),
  lower case, and traditional Chinese characters mapped to simplified ones (only when the
  text holds CJK at all, so Latin-script text costs one regex scan more than before).
- :func:`segment`: words, with jieba for runs of Chinese characters and the letter/digit
  runs of every other script as they are.
- :func:`expand_glossary`: the text with the Chinese words of the English customer-service
  words in it appended (:mod:`kefu.core.glossary`), for visitors who mix the two.
- :func:`pinyin_text`: Chinese characters replaced by toneless pinyin, so that a visitor
  who types ``tuikuan`` or a homophone typo (退宽 for 退款) lands on the same letters.

jieba, pypinyin and zhconv are imported on first use; jieba's dictionary takes about a
second to load once per process (:func:`warm_up` does it ahead of time).
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata

log = logging.getLogger(__name__)

_CJK_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK = re.compile(f"[{_CJK_CLASS}]")
_CJK_RUN = re.compile(f"[{_CJK_CLASS}]+")
_WORD_RUN = re.compile(f"[{_CJK_CLASS}]+|[^\\W_{_CJK_CLASS}]+", re.UNICODE)


def has_cjk(text: str) -> bool:
    """Whether ``text`` holds at least one Chinese character."""
    return _CJK.search(text) is not None


def cjk_share(texts) -> float:
    """Share of ``texts`` that hold Chinese characters."""
    texts = list(texts)
    return sum(1 for t in texts if has_cjk(t)) / len(texts) if texts else 0.0


@functools.lru_cache(maxsize=1)
def _zhconv():
    import zhconv

    return zhconv


def to_simplified(text: str) -> str:
    """Traditional Chinese characters mapped to simplified ones (others unchanged)."""
    if not has_cjk(text):
        return text
    return _zhconv().convert(text, "zh-cn")


def normalize_text(text: str) -> str:
    """NFKC-fold, lower-case and map traditional Chinese to simplified."""
    return to_simplified(unicodedata.normalize("NFKC", text).lower())


@functools.lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def segment(text: str) -> list[str]:
    """Words of already-normalised ``text``: jieba for Chinese runs, letter runs otherwise."""
    words: list[str] = []
    for run in _WORD_RUN.findall(text):
        if _CJK.match(run):
            words.extend(w for w in _jieba().lcut(run, HMM=False) if w.strip())
        else:
            words.append(run)
    return words


@functools.lru_cache(maxsize=1)
def _pinyin():
    import pypinyin

    return pypinyin


def _run_pinyin(match: re.Match) -> str:
    return "".join(_pinyin().lazy_pinyin(match.group(0), errors="ignore"))


def pinyin_text(text: str) -> str:
    """``text`` with each run of Chinese characters replaced by its toneless pinyin."""
    if not has_cjk(text):
        return text
    return _CJK_RUN.sub(_run_pinyin, text)


def expand_glossary(text: str) -> str:
    """Already-normalised ``text`` followed by the Chinese words of its English glossary words
    (``points怎么用`` -> ``points怎么用 积分``); unchanged when none is found."""
    from kefu.core.glossary import glossary_terms

    terms = glossary_terms(text)
    return f"{text} {' '.join(terms)}" if terms else text


def warm_up() -> None:
    """Load the segmenter's dictionary and the converters now rather than on first use."""
    segment(normalize_text("預熱分詞"))
    pinyin_text("预热")


__all__ = [
    "cjk_share",
    "expand_glossary",
    "has_cjk",
    "normalize_text",
    "pinyin_text",
    "segment",
    "to_simplified",
    "warm_up",
]
