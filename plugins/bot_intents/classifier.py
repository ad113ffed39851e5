"""Intent classifier: TF-IDF word + character n-grams, a linear SVM, softmax confidences.

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
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.svm import LinearSVC

from kefu.plugins.bot_intents.features import (
    FeatureConfig,
    SingleTextFeatures,
    build_vectorizer,
)

log = logging.getLogger(__name__)

#: Temperature used when there is too little data to fit one (fitted value on CLINC150).
DEFAULT_TEMPERATURE = 6.5
_MIN_CALIBRATION = 20


@dataclass(frozen=True)
class TrainingOptions:
    """How to train. ``oos_label`` examples, if any, become an explicit out-of-scope class."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    c: float = 1.0
    threshold: float = 0.0
    oos_label: str = "oos"
    calibration_fraction: float = 0.15
    seed: int = 0


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
    ) -> None:
        self._vectorizer = vectorizer
        self._single = SingleTextFeatures(vectorizer)
        self._weights_t = np.ascontiguousarray(weights.T, dtype=np.float32)  # (features, k)
        self._bias = np.asarray(bias, dtype=np.float32)
        self.labels: tuple[str, ...] = tuple(labels)
        self.temperature = float(temperature)
        self.threshold = float(threshold)
        self.oos_label = oos_label
        self.train_seconds = train_seconds
        self._oos_index = self.labels.index(oos_label) if oos_label in self.labels else -1

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
        x = self._vectorizer.transform(list(texts))
        return np.asarray(x @ self._weights_t) + self._bias

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Softmax confidences over :attr:`labels`, one row per text."""
        return _softmax(self.decision(texts), self.temperature)

    def predict(self, text: str, top: int = 3) -> IntentPrediction:
        """Classify one utterance (the latency-critical path)."""
        columns, values = self._single.transform(text)
        scores = values.astype(np.float32) @ self._weights_t[columns] + self._bias
        return self._prediction(_softmax(scores[None, :], self.temperature)[0], top)

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


def _fit_linear(texts: Sequence[str], labels: Sequence[str], options: TrainingOptions):
    vectorizer = build_vectorizer(options.features)
    x = vectorizer.fit_transform(texts)
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
    temperature = DEFAULT_TEMPERATURE
    if calibration is None:
        held = _holdout_split(labels, options.calibration_fraction, options.seed)
        if held.sum() >= _MIN_CALIBRATION and len(set(np.asarray(labels)[~held])) >= 2:
            kept = ~held
            fitted = _fit_linear(
                [t for t, k in zip(texts, kept, strict=True) if k],
                [y for y, k in zip(labels, kept, strict=True) if k],
                options,
            )
            temperature = _temperature_for(
                fitted, np.asarray(texts)[held], np.asarray(labels)[held]
            )
    vectorizer, weights, bias, classes = _fit_linear(texts, labels, options)
    if calibration is not None:
        temperature = _temperature_for((vectorizer, weights, bias, classes), *calibration)
    elapsed = time.perf_counter() - started
    counts = Counter(labels)
    log.info(
        "trained %d intents on %d utterances in %.1fs (temperature %.2f)",
        len(counts),
        len(texts),
        elapsed,
        temperature,
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
    )


def _temperature_for(fitted, texts: Sequence[str], labels: Sequence[str]) -> float:
    vectorizer, weights, bias, classes = fitted
    index = {label: i for i, label in enumerate(classes)}
    pairs = [(t, index[y]) for t, y in zip(texts, labels, strict=True) if y in index]
    if len(pairs) < _MIN_CALIBRATION:
        return DEFAULT_TEMPERATURE
    x = vectorizer.transform([t for t, _ in pairs])
    scores = np.asarray(x @ np.asarray(weights).T) + bias
    return fit_temperature(scores, np.array([i for _, i in pairs]))


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
    "train_classifier",
    "train_in_executor",
]
