"""Intent recognition (kefu.plugins.bot_intents) and ``kefu bot eval``.

Small data only: an English synthetic set written here and the Chinese CLINC-format
fixture ``tests/data/clinc_zh_small.json``. The full CLINC150/BANKING77 runs live in
``tests/bench/bot_eval_bench.py``.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from kefu.plugins.bot_intents.classifier import (
    TrainingOptions,
    fit_temperature,
    train_classifier,
    train_in_executor,
)
from kefu.plugins.bot_intents.datasets import DatasetError, load_dataset
from kefu.plugins.bot_intents.metrics import choose_threshold, macro_f1, wilson_interval

ROOT = Path(__file__).resolve().parent.parent
ZH_FIXTURE = ROOT / "tests" / "data" / "clinc_zh_small.json"
KEFU = Path(sys.executable).parent / "kefu"

EN_INTENTS = {
    "order_status": [
        "where is my order",
        "track my package please",
        "has my order shipped yet",
        "when will my parcel arrive",
        "what's the status of my order",
        "my delivery hasn't come",
        "can you check where my shipment is",
        "is my package on its way",
    ],
    "refund": [
        "i want a refund",
        "give me my money back",
        "how do i get refunded",
        "when will the refund reach my card",
        "refund this purchase",
        "i was charged and want the money returned",
        "request a refund for my order",
        "how long do refunds take",
    ],
    "reset_password": [
        "i forgot my password",
        "reset my password",
        "can't log in to my account",
        "how do i change my login password",
        "my password doesn't work",
        "locked out of my account",
        "send me a password reset link",
        "i need a new password",
    ],
    "opening_hours": [
        "when are you open",
        "what are your opening hours",
        "are you open on sunday",
        "what time do you close today",
        "store hours please",
        "is the shop open on holidays",
        "until what time are you open",
        "what time do you open tomorrow",
    ],
    "human_agent": [
        "talk to a human",
        "connect me to an agent",
        "i want a real person",
        "let me speak to customer service",
        "transfer me to support staff",
        "is there a person i can chat with",
        "get me a representative",
        "stop the bot and get a human",
    ],
}


def _english() -> tuple[list[str], list[str]]:
    texts = [t for examples in EN_INTENTS.values() for t in examples]
    labels = [name for name, examples in EN_INTENTS.items() for _ in examples]
    return texts, labels


def kefu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(KEFU), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


# --- pure helpers ------------------------------------------------------------


def test_wilson_interval_matches_reference_values():
    lo, hi = wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=5e-5) and hi == pytest.approx(0.3662, abs=5e-5)
    # Independent closed forms: at 0 successes the upper bound is z²/(n+z²).
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    lo, hi = wilson_interval(50, 100)
    assert lo + hi == pytest.approx(1.0) and hi - lo < 0.2
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_macro_f1_and_threshold_choice():
    assert macro_f1(["a", "a", "b"], ["a", "b", "b"], ["a", "b"]) == pytest.approx(
        (2 / 3 + 2 / 3) / 2
    )
    confidence = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    correct = np.array([True] * 8 + [False] * 2)
    # 10% budget on 10 examples: may lose one right answer (0.2), so the bar is 0.3.
    assert choose_threshold(confidence, correct, 0.10) == pytest.approx(0.3)
    assert choose_threshold(confidence, correct, 0.0) == 0.0


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(4000, 5))
    z = scores * 3.0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    targets = np.array([rng.choice(5, p=row) for row in p])
    assert fit_temperature(scores, targets, prior=6.5) == pytest.approx(3.0, rel=0.15)


# --- the classifier ----------------------------------------------------------


def test_english_intents_generalise_to_new_phrasing():
    clf = train_classifier(*_english())
    probes = {
        "where's my parcel": "order_status",
        "i would like my money refunded": "refund",
        "forgot the password to my account": "reset_password",
        "are you open sunday": "opening_hours",
        "can i talk to a real human": "human_agent",
    }
    for text, intent in probes.items():
        answer = clf.predict(text)
        assert answer.intent == intent, (text, answer)
        assert 0.0 < answer.confidence <= 1.0
        assert answer.ranking[0][0] == intent


def test_chinese_without_segmentation():
    dataset = load_dataset(ZH_FIXTURE)
    texts, labels = zip(*dataset.train, strict=True)
    clf = train_classifier(texts, labels)
    predicted = [a.best for a in clf.predict_many([t for t, _ in dataset.test])]
    accuracy = np.mean([p == y for p, (_, y) in zip(predicted, dataset.test, strict=True)])
    assert accuracy >= 0.9, accuracy
    assert clf.predict("我的快递怎么还没到").intent == "order_status"
    full_width = "\uff36\uff29\uff30\u5ba2\u670d\uff0c\u6211\u8981\u8f6c\u4eba\u5de5"
    assert clf.predict(full_width).intent == "human_agent"  # full-width VIP and comma, NFKC-folded


def test_typed_pinyin_meets_the_chinese_phrase_with_or_without_spaces():
    from kefu.plugins.bot_intents.features import FeatureConfig, build_vectorizer

    union = build_vectorizer(FeatureConfig(chinese=True, glossary=True)).fit(
        ["订单到哪了", "我要退款", "发票怎么开"]
    )
    pinyin = dict(union.transformer_list)["pinyin"]
    analyze = pinyin.build_analyzer()
    assert set(analyze("dingdan dao na le")) == set(analyze("订单到哪了"))
    order, refund, typed = pinyin.transform(["订单到哪了", "我要退款", "dingdan dao na le"])
    assert (typed @ order.T).toarray()[0, 0] > 0.99
    assert (typed @ refund.T).toarray()[0, 0] < 0.3


def test_threshold_turns_low_confidence_into_out_of_scope():
    clf = train_classifier(*_english())
    text = "what's the weather on mars"
    open_ = clf.with_threshold(0.0).predict(text)
    assert open_.intent is not None and not open_.out_of_scope
    strict = clf.with_threshold(min(1.0, open_.confidence + 0.01)).predict(text)
    assert strict.out_of_scope and strict.intent is None
    assert strict.best == open_.intent and strict.confidence == pytest.approx(open_.confidence)
    # The threshold only rejects: a confident in-scope answer survives a moderate one.
    assert clf.with_threshold(0.3).predict("reset my password").intent == "reset_password"


def test_out_of_scope_class_from_training_examples():
    dataset = load_dataset(ZH_FIXTURE)
    texts, labels = zip(*(dataset.train + dataset.oos_train), strict=True)
    clf = train_classifier(texts, labels, TrainingOptions(oos_label="oos"))
    assert "oos" in clf.labels and "oos" not in clf.intents
    answer = clf.predict("给我讲个笑话")  # an oos_train utterance
    assert answer.out_of_scope and answer.best != "oos"


def test_single_predictions_match_the_batch_path():
    clf = train_classifier(*_english())
    texts = ["where is my order", "open on sunday?", "", "zzzz qqqq"]
    batch = clf.predict_many(texts)
    for text, expected in zip(texts, batch, strict=True):
        one = clf.predict(text)
        assert one.best == expected.best
        assert one.confidence == pytest.approx(expected.confidence, rel=1e-4)


def test_training_refuses_a_single_intent():
    with pytest.raises(ValueError, match="at least two intents"):
        train_classifier(["a", "b"], ["x", "x"])


async def test_training_in_a_worker_process_keeps_the_loop_free():
    texts, labels = _english()
    texts, labels = texts * 40, labels * 40  # enough work for the loop to tick meanwhile
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)
    with ProcessPoolExecutor(max_workers=1) as pool:
        clf = await train_in_executor(texts, labels, executor=pool)
    during = ticks
    beat.cancel()
    assert clf.predict("track my package").intent == "order_status"
    # A blocking call would have let no heartbeat run until training finished.
    assert during >= 3, during


# --- the command line --------------------------------------------------------

JSON_KEYS = {
    "accuracy",
    "accuracy_ci95",
    "macro_f1",
    "oos_recall",
    "p50_ms",
    "p99_ms",
    "train_seconds",
    "dataset_sha256",
    "threshold",
    "coverage",
    "accuracy_at_threshold",
}


def test_cli_eval_json_on_the_chinese_fixture():
    result = kefu("bot", "eval", "--dataset", str(ZH_FIXTURE), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert JSON_KEYS <= set(report)
    for key in ("accuracy", "macro_f1", "oos_recall", "coverage", "accuracy_at_threshold"):
        assert 0.0 <= report[key] <= 1.0, key
    lo, hi = report["accuracy_ci95"]
    assert 0.0 <= lo <= report["accuracy"] <= hi <= 1.0
    assert report["accuracy"] >= 0.9
    assert 0 < report["p50_ms"] <= report["p99_ms"] and report["train_seconds"] > 0
    assert report["dataset_sha256"] == hashlib.sha256(ZH_FIXTURE.read_bytes()).hexdigest()
    assert report["intents"] == 10 and report["oos_training"] == "class"


def test_cli_eval_csv_folder_with_fixed_threshold(tmp_path):
    splits = {
        "train": [(t, y) for y, examples in EN_INTENTS.items() for t in examples],
        "test": [(t, y) for y, examples in EN_INTENTS.items() for t in examples[5:]],
    }
    for split, rows in splits.items():
        with (tmp_path / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "category"])
            writer.writerows(rows)
    result = kefu("bot", "eval", "--dataset", str(tmp_path), "--threshold", "0.2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "in-scope accuracy" in out and "latency p50 / p99" in out and "sha256" in out
    assert "0.200" in out and "n/a" in out  # given threshold; no out-of-scope test data
    assert "training on" in result.stderr  # progress went to stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "dataset not found"),
        ('{"train": [["hi", "greet"]', "not valid JSON (line 1"),
        ('["not", "an", "object"]', "keys train, val, test"),
        ('{"train": [["hi"]], "test": []}', "train[0] must be [text, label]"),
    ],
)
def test_cli_eval_reports_bad_datasets_in_one_line(tmp_path, content, message):
    path = tmp_path / "data.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = kefu("bot", "eval", "--dataset", str(path), "--json")
    assert result.returncode == 2
    assert message in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_bad_csv_header_and_threshold_argument(tmp_path):
    (tmp_path / "train.csv").write_text("sentence,intent\nhi,greet\n", encoding="utf-8")
    (tmp_path / "test.csv").write_text("sentence,intent\nhi,greet\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="'text' and a 'category' column"):
        load_dataset(tmp_path)
    result = kefu("bot", "eval", "--dataset", str(tmp_path), "--threshold", "high")
    assert result.returncode == 2 and "expected 'auto' or a number" in result.stderr
