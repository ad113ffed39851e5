"""``kefu bot eval``'s engine: train on train, tune on val, report on test.

Out-of-scope handling: ``oos_train`` utterances are training data, so they train an
explicit out-of-scope class (turn off with ``oos_class=False``); ``oos_val`` is used only
to choose the confidence threshold; ``oos_test`` only to report out-of-scope recall. The
softmax temperature is fitted on the in-scope ``val`` utterances. Nothing from ``test``
influences training, calibration or the threshold.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from kefu.plugins.bot_intents.classifier import (
    IntentClassifier,
    TrainingOptions,
    train_classifier,
)
from kefu.plugins.bot_intents.datasets import Dataset, Example
from kefu.plugins.bot_intents.metrics import (
    choose_threshold,
    macro_f1,
    percentile_ms,
    wilson_interval,
)

log = logging.getLogger(__name__)

#: A progress reporter: ``step(message, total)`` returns a context manager whose value
#: is a callable ``advance(n)``; the CLI draws it, tests pass :func:`no_progress`.
Progress = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]


@contextlib.contextmanager
def no_progress(message: str, total: int = 0) -> Iterator[Callable[[int], None]]:
    yield lambda n=1: None


@dataclass(frozen=True)
class EvalOptions:
    """``threshold=None`` means: choose it on val (see :func:`choose_threshold`)."""

    threshold: float | None = None
    max_accuracy_drop: float = 0.01
    oos_class: bool = True
    oos_label: str = "oos"
    latency_samples: int = 0  # 0: every test utterance
    training: TrainingOptions | None = None


def _split(items: list[Example]) -> tuple[list[str], list[str]]:
    return [t for t, _ in items], [label for _, label in items]


def _top(clf: IntentClassifier, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Top label and its confidence for each text (batched, same as predict())."""
    if not texts:
        return np.array([], dtype=object), np.array([], dtype=float)
    probs = clf.probabilities(texts)
    labels = np.array(clf.labels, dtype=object)
    return labels[probs.argmax(axis=1)], probs.max(axis=1)


def evaluate(dataset: Dataset, options: EvalOptions, progress: Progress = no_progress) -> dict:
    """Run the whole evaluation and return the report as a JSON-ready dict."""
    training = options.training or TrainingOptions(oos_label=options.oos_label)
    train_items = dataset.train + (dataset.oos_train if options.oos_class else [])
    texts, labels = _split(train_items)
    calibration = _split(dataset.val) if len(dataset.val) >= 20 else None
    intents = dataset.intents
    with progress(f"training on {len(texts):,} utterances ({len(set(labels))} classes)", 0):
        started, started_cpu = time.perf_counter(), time.process_time()
        clf = train_classifier(texts, labels, training, calibration)
        train_seconds = time.perf_counter() - started
        train_cpu_seconds = time.process_time() - started_cpu

    threshold, threshold_source = _threshold(clf, dataset, options, progress)
    clf = clf.with_threshold(threshold)

    with progress(f"scoring {len(dataset.test) + len(dataset.oos_test):,} test utterances", 0):
        test_texts, truth = _split(dataset.test)
        predicted, confidence = _top(clf, test_texts)
        oos_predicted, oos_confidence = _top(clf, _split(dataset.oos_test)[0])
    truth_arr = np.array(truth, dtype=object)
    correct = predicted == truth_arr
    accepted = (predicted != options.oos_label) & (confidence >= threshold)
    oos_rejected = (oos_predicted == options.oos_label) | (oos_confidence < threshold)
    n, n_correct = len(truth), int(correct.sum())
    n_oos = len(dataset.oos_test)

    latencies, cpu_latencies = _latencies(clf, dataset, options, progress)
    return {
        "dataset": dataset.name,
        "dataset_format": dataset.format,
        "dataset_sha256": dataset.sha256,
        "dataset_files": dataset.files,
        "intents": len(intents),
        "train_examples": len(dataset.train),
        "oos_train_examples": len(dataset.oos_train),
        "oos_training": "class" if options.oos_class and dataset.oos_train else "none",
        "val_examples": len(dataset.val),
        "oos_val_examples": len(dataset.oos_val),
        "test_examples": n,
        "oos_test_examples": n_oos,
        "accuracy": _frac(n_correct, n),
        "accuracy_ci95": list(wilson_interval(n_correct, n)),
        "macro_f1": macro_f1(truth, list(predicted), intents),
        "threshold": threshold,
        "threshold_source": threshold_source,
        "coverage": _frac(int(accepted.sum()), n),
        "accuracy_at_threshold": _frac(int((correct & accepted).sum()), int(accepted.sum())),
        "inscope_accuracy_at_threshold": _frac(int((correct & accepted).sum()), n),
        "oos_recall": _frac(int(oos_rejected.sum()), n_oos) if n_oos else None,
        "oos_recall_ci95": list(wilson_interval(int(oos_rejected.sum()), n_oos)) if n_oos else None,
        "p50_ms": percentile_ms(latencies, 50),
        "p99_ms": percentile_ms(latencies, 99),
        "p50_cpu_ms": percentile_ms(cpu_latencies, 50),
        "p99_cpu_ms": percentile_ms(cpu_latencies, 99),
        "latency_samples": len(latencies),
        "train_seconds": train_seconds,
        "train_cpu_seconds": train_cpu_seconds,
        "temperature": clf.temperature,
        "model": _describe(training, clf),
    }


def _describe(training: TrainingOptions, clf: IntentClassifier) -> str:
    (w1, w2), (c1, c2) = training.features.word_ngrams, training.features.char_ngrams
    grams = f"tf-idf word {w1}-{w2} + char_wb {c1}-{c2} grams"
    if clf.chinese:
        (p1, p2) = training.features.pinyin_ngrams
        grams += f" + jieba words 1-2 + pinyin char_wb {p1}-{p2} grams"
    if clf.encoder is not None:
        grams += f" + {clf.encoder!r} x{training.embedding_weight:g}"
    return f"{grams}, LinearSVC C={training.c:g}, softmax"


def _frac(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _threshold(
    clf: IntentClassifier, dataset: Dataset, options: EvalOptions, progress: Progress
) -> tuple[float, str]:
    if options.threshold is not None:
        return options.threshold, "given"
    if not dataset.val or not dataset.oos_val:
        return 0.0, "auto: val has no out-of-scope examples, so nothing is rejected"
    with progress("choosing the threshold on val", 0):
        texts, truth = _split(dataset.val)
        predicted, confidence = _top(clf, texts)
    correct = predicted == np.array(truth, dtype=object)
    threshold = choose_threshold(confidence, correct, options.max_accuracy_drop)
    drop = options.max_accuracy_drop * 100
    return threshold, f"auto: highest on val costing <= {drop:g} pt of in-scope accuracy"


def _latencies(
    clf: IntentClassifier, dataset: Dataset, options: EvalOptions, progress: Progress
) -> tuple[list[float], list[float]]:
    """Time ``predict`` one utterance at a time, pinned to one core, one BLAS thread.

    Returns wall-clock and CPU (thread) durations: on a busy machine the wall clock
    also counts time spent waiting for the core.
    """
    texts = [t for t, _ in dataset.test + dataset.oos_test]
    if options.latency_samples and len(texts) > options.latency_samples:
        step = len(texts) / options.latency_samples
        texts = [texts[int(i * step)] for i in range(options.latency_samples)]
    for text in texts[:50]:  # warm-up: caches, lazy imports
        clf.predict(text)
    timings: list[float] = []
    cpu_timings: list[float] = []
    with (
        _one_core(),
        threadpool_limits(limits=1),
        progress(f"timing {len(texts):,} single classifications", len(texts)) as advance,
    ):
        for i, text in enumerate(texts):
            started, started_cpu = time.perf_counter(), time.thread_time()
            clf.predict(text)
            cpu_timings.append(time.thread_time() - started_cpu)
            timings.append(time.perf_counter() - started)
            if i % 250 == 249:
                advance(250)
        advance(len(texts) % 250)
    return timings, cpu_timings


@contextlib.contextmanager
def _one_core() -> Iterator[Any]:
    """Pin this process to a single CPU for the duration (Linux), then restore."""
    getter = getattr(os, "sched_getaffinity", None)
    setter = getattr(os, "sched_setaffinity", None)
    if getter is None or setter is None:
        yield None
        return
    before = getter(0)
    try:
        setter(0, {min(before)})
    except OSError:
        yield None
        return
    try:
        yield None
    finally:
        setter(0, before)
