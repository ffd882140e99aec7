"""The embedding cache (varro.engine.embed.embedders.CachedEmbedder): one float32 vector per model and text. Table
`embeddings`."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import sqlite_utils

from varro.engine.store.clock import utc_now

_CHUNK = 500  # under SQLite's variable limit


def cached_vectors(db: sqlite_utils.Database, model: str, content_sha1s: Iterable[str]) -> dict[str, np.ndarray]:
    """content sha1 -> the stored float32 vector under `model`, for those of `content_sha1s` that are cached."""
    keys = sorted(set(content_sha1s))
    found: dict[str, np.ndarray] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        for row in db.query(
            f"select content_sha1, vector from embeddings where model = ? and content_sha1 in ({marks})",
            [model, *chunk],
        ):
            found[row["content_sha1"]] = np.frombuffer(row["vector"], dtype=np.float32)
    return found


def insert_vectors(db: sqlite_utils.Database, model: str, vectors: dict[str, np.ndarray]) -> None:
    """Cache `vectors` (content sha1 -> vector) under `model` as float32; a vector already cached is kept."""
    now = utc_now()
    with db.atomic():
        db["embeddings"].insert_all(
            [{"model": model, "content_sha1": k, "dim": int(v.shape[0]),
              "vector": np.asarray(v).astype(np.float32).tobytes(), "created_utc": now}
             for k, v in vectors.items()],
            ignore=True,
        )
