"""Intent classifier: TF-IDF n-grams plus sentence embeddings, a linear SVM, softmax.

Features are the TF-IDF word and character n-gram blocks of
:mod:`~kefu.plugins.bot_intents.features` and, when a sentence-embedding model is
available (:mod:`~kefu.plugins.bot_intents.embeddings`; ``TrainingOptions.embedding_model``),
the text's mean-pooled MiniLM vector times ``embedding_weight``, side by side in one
linear model. The n-grams carry any language without segmentation; the embeddings add
paraphrase knowledge (English for the default model, which is therefore used by
``"auto"`` only when most training texts are in Latin script).

Training is a plain function of picklable arguments (:func:`train_classifier`), so a
server can run it with ``loop.run_in_executor`` in a thread or process pool and keep the
event loop free (:func:`train_in_executor`). A trained :class:`IntentClassifier` is
immutable and safe to share between threads; :meth:`IntentClassifier.predict` turns an
input whose best confidence is below the threshold into out-of-scope (``intent=None``).

Confidences are a softmax over the SVM's decision values with one temperature fitted
by maximum likelihood on held-out utterances (the ``calibration`` set when given, else a
stratified slice of the training data), so a threshold such as 0.5 means roughly "right
at least half of the time".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import minimize_scalar
from sklearn.svm import LinearSVC

from kefu.plugins.bot_intents.embeddings import (
    ReducedEncoder,
    SentenceEncoder,
    load_encoder,
    reduce_encoder,
    resolve_model_dir,
)
from kefu.plugins.bot_intents.features import (
    FeatureConfig,
    SingleTextFeatures,
    build_vectorizer,
    resolve_chinese,
)
from kefu.plugins.bot_intents.word_vectors import WordVectorEncoder, load_word_vectors

log = logging.getLogger(__name__)

#: Temperature used when there is too little data to fit one (fitted value on CLINC150).
DEFAULT_TEMPERATURE = 6.5
_MIN_CALIBRATION = 20
#: Texts whose probabilities a classifier remembers (the bot asks twice for one message).
_PREDICT_CACHE = 1024


@dataclass(frozen=True)
class TrainingOptions:
    """How to train. ``oos_label`` examples, if any, become an explicit out-of-scope class."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    c: float = 1.0
    threshold: float = 0.0
    oos_label: str = "oos"
    calibration_fraction: float = 0.15
    seed: int = 0
    #: ``"auto"`` (the installed all-MiniLM-L6-v2 for mostly-Latin-script data), ``"none"``,
    #: or a sentence-transformers BERT model folder (always used).
    embedding_model: str = "auto"
    #: Transformer blocks of the embedding model to run (0: all); 3 of MiniLM's 6 keep
    #: most of the accuracy at half the cost per message (docs/bot.md has the figures).
    embedding_layers: int = 3
    #: Project the vectors to this many principal components before the linear model
    #: (0: keep all); halves training time (docs/bot.md).
    embedding_dims: int = 128
    #: Scale of the embedding block beside the unit-norm n-gram blocks.
    embedding_weight: float = 2.0
    #: With ``"auto"``: the share of training texts that must be mostly Latin letters.
    embedding_min_latin: float = 0.5


@dataclass(frozen=True)
class IntentPrediction:
    """The answer for one utterance.

    ``intent`` is None when the input is out of scope (below the threshold, or the
    out-of-scope class won); ``best`` is the top in-scope guess even then.
    """

    intent: str | None
    confidence: float
    best: str
    ranking: tuple[tuple[str, float], ...]

    @property
    def out_of_scope(self) -> bool:
        return self.intent is None


class IntentClassifier:
    """A trained classifier; build it with :func:`train_classifier`."""

    def __init__(
        self,
        vectorizer,
        weights: np.ndarray,
        bias: np.ndarray,
        labels: Sequence[str],
        *,
        temperature: float,
        threshold: float,
        oos_label: str,
        train_seconds: float = 0.0,
        encoder: SentenceEncoder | ReducedEncoder | WordVectorEncoder | None = None,
        embedding_weight: float = 1.0,
    ) -> None:
        self._vectorizer = vectorizer
        self._single = SingleTextFeatures(vectorizer)
        weights_t = np.asarray(weights, dtype=np.float32).T  # (features, k)
        n_sparse = self._single.n_features
        self._weights_t = np.ascontiguousarray(weights_t[:n_sparse])
        self.encoder = encoder
        # the embedding block's weights with its scale folded in: x_dense @ _dense_t
        self._dense_t = (
            np.ascontiguousarray(weights_t[n_sparse:] * embedding_weight)
            if encoder is not None
            else None
        )
        self._bias = np.asarray(bias, dtype=np.float32)
        self.labels: tuple[str, ...] = tuple(labels)
        self.temperature = float(temperature)
        self.threshold = float(threshold)
        self.oos_label = oos_label
        self.train_seconds = train_seconds
        self._oos_index = self.labels.index(oos_label) if oos_label in self.labels else -1
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        #: False while the bot's ``bot_embeddings`` feature is shed under pressure
        #: (docs/degradation.md level 2): :meth:`predict` scores the n-gram block alone
        #: (its weights from the joint model) and skips the encoder's forward pass.
        self.dense = True

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_cache", None)
        state.pop("_cache_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("dense", True)
        self._cache = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def model(self) -> str:
        """What the features are, e.g. for logs and ``kefu bot eval``."""
        grams = "tf-idf word + char n-grams"
        return grams if self.encoder is None else f"{grams} + {self.encoder!r}"

    @property
    def chinese(self) -> bool:
        """Whether the Chinese feature blocks (jieba words, pinyin) were built."""
        return any(name in ("segment", "pinyin") for name, _ in self._vectorizer.transformer_list)

    @property
    def intents(self) -> tuple[str, ...]:
        """The in-scope intents (the out-of-scope class excluded)."""
        return tuple(label for label in self.labels if label != self.oos_label)

    def with_threshold(self, threshold: float) -> IntentClassifier:
        """A copy sharing the fitted model, with another confidence threshold."""
        clone = object.__new__(IntentClassifier)
        clone.__dict__.update(self.__dict__)
        clone.threshold = float(threshold)
        return clone

    def decision(self, texts: Sequence[str]) -> np.ndarray:
        """Raw SVM decision values, shape ``(len(texts), len(labels))``."""
        texts = list(texts)
        scores = np.asarray(self._vectorizer.transform(texts) @ self._weights_t) + self._bias
        if self.encoder is not None:
            scores += self.encoder.encode(texts) @ self._dense_t
        return scores

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Softmax confidences over :attr:`labels`, one row per text."""
        return _softmax(self.decision(texts), self.temperature)

    def predict(self, text: str, top: int = 3) -> IntentPrediction:
        """Classify one utterance (the latency-critical path).

        The probabilities of the last texts seen are kept, so a caller may classify a
        message in a worker thread first and the dialogue engine's call is then free.
        """
        with self._cache_lock:
            probs = self._cache.get(text)
            if probs is not None:
                self._cache.move_to_end(text)
        if probs is None:
            columns, values = self._single.transform(text)
            scores = values.astype(np.float32) @ self._weights_t[columns] + self._bias
            dense = self.encoder is not None and getattr(self, "dense", True)
            if dense:
                scores += self.encoder.encode_one(text) @ self._dense_t
            probs = _softmax(scores[None, :], self.temperature)[0]
            if dense or self.encoder is None:  # an n-gram-only guess is not kept
                with self._cache_lock:
                    self._cache[text] = probs
                    while len(self._cache) > _PREDICT_CACHE:
                        self._cache.popitem(last=False)
        return self._prediction(probs, top)

    def predict_many(self, texts: Sequence[str], top: int = 3) -> list[IntentPrediction]:
        """Classify a batch; same answers as :meth:`predict` one by one."""
        return [self._prediction(row, top) for row in self.probabilities(texts)]

    def _prediction(self, probs: np.ndarray, top: int) -> IntentPrediction:
        order = np.argsort(-probs)
        ranking = tuple((self.labels[i], float(probs[i])) for i in order[:top])
        best_index = int(order[0])
        confidence = float(probs[best_index])
        in_scope = [int(i) for i in order if i != self._oos_index]
        best = self.labels[in_scope[0]] if in_scope else self.labels[best_index]
        rejected = best_index == self._oos_index or confidence < self.threshold
        return IntentPrediction(None if rejected else best, confidence, best, ranking)


def _softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = scores * temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(
    scores: np.ndarray, targets: np.ndarray, prior: float = DEFAULT_TEMPERATURE
) -> float:
    """The softmax temperature maximising the likelihood of ``targets``, shrunk to ``prior``.

    A log-normal prior (sigma 0.5 in log space) keeps a small or perfectly separated
    calibration set from driving the temperature to an extreme; with thousands of
    examples the data decides.
    """
    rows = np.arange(len(targets))

    def objective(log_t: float) -> float:
        z = scores * math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(axis=1))
        nll = float(np.sum(log_norm - z[rows, targets]))
        return nll + 2.0 * (log_t - math.log(prior)) ** 2

    result = minimize_scalar(objective, bounds=(math.log(0.5), math.log(50.0)), method="bounded")
    return float(math.exp(result.x))


def _latin_share(texts: Sequence[str]) -> float:
    """Share of texts whose letters are mostly Latin (ASCII-range after NFKC)."""
    if not texts:
        return 0.0
    latin = 0
    for text in texts:
        letters = [c for c in text if c.isalpha()]
        if letters and sum(c < "\u0250" for c in letters) * 2 >= len(letters):
            latin += 1
    return latin / len(texts)


def choose_encoder(
    options: TrainingOptions, texts: Sequence[str], *, word_vectors: bool = True
) -> SentenceEncoder | WordVectorEncoder | None:
    """The sentence encoder training should use, or None (n-grams only).

    With ``"auto"``: the installed MiniLM for mostly-Latin-script texts; for texts that
    get the Chinese feature blocks, the installed Chinese word vectors
    (:mod:`~kefu.plugins.bot_intents.word_vectors`; ``word_vectors=False`` leaves them out).

    :raises EmbeddingModelError: an explicitly named model folder cannot be used.
    """
    setting = options.embedding_model
    if setting.strip().lower() == "auto" and _latin_share(texts) < options.embedding_min_latin:
        if word_vectors and resolve_chinese(options.features, texts).chinese:
            encoder = load_word_vectors()
            if encoder is not None:
                return encoder
        log.info("training texts are mostly not in Latin script: no English embeddings")
        return None
    folder = resolve_model_dir(setting)
    if folder is None:
        return None
    return load_encoder(folder, options.embedding_layers)


def _features(vectorizer, texts: Sequence[str], dense: np.ndarray | None, weight: float, fit=False):
    x = vectorizer.fit_transform(texts) if fit else vectorizer.transform(texts)
    if dense is None:
        return x
    return sparse.hstack([x, sparse.csr_matrix(dense * weight)], format="csr")


def _fit_linear(
    texts: Sequence[str],
    labels: Sequence[str],
    options: TrainingOptions,
    dense: np.ndarray | None = None,
):
    vectorizer = build_vectorizer(resolve_chinese(options.features, texts))
    x = _features(vectorizer, texts, dense, options.embedding_weight, fit=True)
    model = LinearSVC(C=options.c, dual=True, max_iter=5000, random_state=options.seed)
    model.fit(x, labels)
    weights, bias = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # binary LinearSVC keeps one hyperplane: make it two
        weights, bias = np.vstack([-weights, weights]) / 2, np.array([-bias[0], bias[0]]) / 2
    return vectorizer, weights, bias, [str(c) for c in model.classes_]


def _holdout_split(labels: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a stratified held-out slice (classes with fewer than 3 examples stay in)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    for indices in by_label.values():
        if len(indices) >= 3:
            take = max(1, round(len(indices) * fraction))
            mask[rng.choice(indices, size=take, replace=False)] = True
    return mask


def train_classifier(
    texts: Sequence[str],
    labels: Sequence[str],
    options: TrainingOptions | None = None,
    calibration: tuple[Sequence[str], Sequence[str]] | None = None,
) -> IntentClassifier:
    """Train a classifier; CPU-bound, so call it in a worker (see :func:`train_in_executor`).

    :param texts: training utterances.
    :param labels: their intents; examples labelled ``options.oos_label`` train an
        explicit out-of-scope class.
    :param calibration: optional held-out ``(texts, labels)`` used only to fit the
        confidence temperature; without it a stratified slice of the training data is
        held out, the temperature fitted, and the model refitted on everything.
    :raises ValueError: with fewer than two distinct labels or mismatched lengths.
    """
    options = options or TrainingOptions()
    texts, labels = [str(t) for t in texts], [str(label) for label in labels]
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if len(set(labels)) < 2:
        raise ValueError("need examples of at least two intents to train a classifier")
    started = time.perf_counter()
    encoder = choose_encoder(options, texts)
    dense = None
    if encoder is not None:
        encoder, dense = reduce_encoder(encoder, encoder.encode(texts), options.embedding_dims)
    temperature = DEFAULT_TEMPERATURE
    if calibration is None:
        held = _holdout_split(labels, options.calibration_fraction, options.seed)
        if held.sum() >= _MIN_CALIBRATION and len(set(np.asarray(labels)[~held])) >= 2:
            kept = ~held
            fitted = _fit_linear(
                [t for t, k in zip(texts, kept, strict=True) if k],
                [y for y, k in zip(labels, kept, strict=True) if k],
                options,
                None if dense is None else dense[kept],
            )
            temperature = _temperature_for(
                fitted,
                options,
                np.asarray(texts)[held],
                np.asarray(labels)[held],
                None if dense is None else dense[held],
            )
    vectorizer, weights, bias, classes = _fit_linear(texts, labels, options, dense)
    if calibration is not None:
        cal_texts, cal_labels = list(calibration[0]), list(calibration[1])
        temperature = _temperature_for(
            (vectorizer, weights, bias, classes),
            options,
            cal_texts,
            cal_labels,
            encoder.encode(cal_texts) if encoder is not None else None,
        )
    elapsed = time.perf_counter() - started
    counts = Counter(labels)
    log.info(
        "trained %d intents on %d utterances in %.1fs (temperature %.2f, %s)",
        len(counts),
        len(texts),
        elapsed,
        temperature,
        "n-grams" if encoder is None else f"n-grams + {encoder!r}",
    )
    return IntentClassifier(
        vectorizer,
        weights,
        bias,
        classes,
        temperature=temperature,
        threshold=options.threshold,
        oos_label=options.oos_label,
        train_seconds=elapsed,
        encoder=encoder,
        embedding_weight=options.embedding_weight,
    )


def _temperature_for(
    fitted,
    options: TrainingOptions,
    texts: Sequence[str],
    labels: Sequence[str],
    dense: np.ndarray | None,
) -> float:
    vectorizer, weights, bias, classes = fitted
    index = {label: i for i, label in enumerate(classes)}
    keep = [i for i, y in enumerate(labels) if y in index]
    if len(keep) < _MIN_CALIBRATION:
        return DEFAULT_TEMPERATURE
    x = _features(
        vectorizer,
        [texts[i] for i in keep],
        None if dense is None else dense[keep],
        options.embedding_weight,
    )
    scores = np.asarray(x @ np.asarray(weights).T) + bias
    return fit_temperature(scores, np.array([index[labels[i]] for i in keep]))


async def train_in_executor(
    texts: Sequence[str],
    labels: Sequence[str],
    options: TrainingOptions | None = None,
    *,
    calibration: tuple[Sequence[str], Sequence[str]] | None = None,
    executor: Executor | None = None,
) -> IntentClassifier:
    """Train without blocking the event loop (default executor: the loop's thread pool).

    Pass a :class:`concurrent.futures.ProcessPoolExecutor` to keep the GIL free as well.
    """
    loop = asyncio.get_running_loop()
    job = functools.partial(train_classifier, list(texts), list(labels), options, calibration)
    return await loop.run_in_executor(executor, job)


__all__ = [
    "IntentClassifier",
    "IntentPrediction",
    "TrainingOptions",
    "choose_encoder",
    "train_classifier",
    "train_in_executor",
]
