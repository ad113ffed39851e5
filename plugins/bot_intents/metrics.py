"""Small, pure evaluation helpers: Wilson interval, macro-F1, percentiles, threshold choice."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion.

    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``z`` the two-sided
    normal quantile (1.95996... for 95%). Returns ``(0.0, 1.0)`` for zero trials.

    :raises ValueError: if the counts are negative or ``successes > trials``.
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if trials == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def macro_f1(truth: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str]) -> float:
    """Unweighted mean of the per-label F1 over ``labels`` (a label never seen scores 0)."""
    if not labels:
        return 0.0
    scores = []
    for label in labels:
        tp = sum(1 for t, p in zip(truth, predicted, strict=True) if t == label and p == label)
        fp = sum(1 for t, p in zip(truth, predicted, strict=True) if t != label and p == label)
        fn = sum(1 for t, p in zip(truth, predicted, strict=True) if t == label and p != label)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of durations in seconds, in milliseconds."""
    if not len(seconds):
        return 0.0
    return float(np.percentile(np.asarray(seconds) * 1000.0, q))


def choose_threshold(
    confidence: np.ndarray, correct: np.ndarray, max_accuracy_drop: float = 0.01
) -> float:
    """The highest confidence threshold that costs at most ``max_accuracy_drop`` accuracy.

    Everything below the threshold is rejected as out-of-scope, so a higher threshold
    catches more out-of-scope input and loses more in-scope answers. In-scope accuracy
    at ``t`` counts the examples that are correct *and* have confidence >= ``t``, over
    all in-scope examples; this returns the largest ``t`` keeping it within
    ``max_accuracy_drop`` (a fraction, 0.01 = one point) of the accuracy with no
    threshold, i.e. the most out-of-scope recall that budget buys.

    :param confidence: top confidence of each in-scope validation example.
    :param correct: whether its top answer was right.
    """
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)
    allowed = math.floor(max_accuracy_drop * len(confidence) + 1e-9)
    right = np.sort(confidence[correct])
    if allowed <= 0 or len(right) == 0:
        return 0.0
    # Rejecting the `allowed` least confident right answers spends the budget exactly.
    return float(right[min(allowed, len(right) - 1)])
