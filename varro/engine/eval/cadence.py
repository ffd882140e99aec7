"""Cadence: how prose moves, measured by the base language model (the Horace idea).

Per-text features from each token's surprisal and entropy under the base model (spike rate and gap, entropy
drop, sentence-length variation, hapax ratio), `cadence_distance` to a human reference set and
`template_share`. The definitions: docs/evaluation.md.
"""

from __future__ import annotations

from collections import Counter

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from varro.engine.model.loading import adapters_off, lora_modules
from varro.engine.rewards.text import split_sentences, words
from varro.engine.train.logprobs import completion_logprobs, prefix_kv

FEATURES = ("mean_surprisal", "spike_rate", "spike_gap", "entropy_drop", "sentence_cv", "hapax_ratio")


def _surprisal_features(s: np.ndarray, h: np.ndarray) -> dict[str, float | None]:
    """The four model-based features of one text's surprisal `s` and entropy `h` (same length)."""
    if s.size == 0:
        return {k: None for k in FEATURES[:4]}
    spikes = np.flatnonzero(s > s.mean() + s.std())  # positions, ascending
    with_next = spikes[spikes + 1 < s.size]
    return {
        "mean_surprisal": float(s.mean()),
        "spike_rate": 100.0 * spikes.size / s.size,
        "spike_gap": float(np.diff(spikes).mean()) if spikes.size >= 2 else None,
        "entropy_drop": float((h[with_next] - h[with_next + 1]).mean()) if with_next.size else None,
    }


def sentence_cv(text: str) -> float | None:
    """std / mean of sentence lengths in words; None with fewer than two sentences that have words."""
    lengths = np.array([len(words(s)) for s, _ in split_sentences(text)], dtype=np.float64)
    lengths = lengths[lengths > 0]
    return float(lengths.std() / lengths.mean()) if lengths.size >= 2 else None


def hapax_ratio(text: str) -> float | None:
    """Share of lower-cased word types that occur exactly once; None when the text has no words."""
    counts = Counter(w.lower() for w in words(text))
    return sum(c == 1 for c in counts.values()) / len(counts) if counts else None


def cadence_features(surprisal: np.ndarray, entropy: np.ndarray, text: str) -> dict[str, float | None]:
    """The cadence features (keys in FEATURES) of one text from its per-token surprisal and entropy.

    Raises ValueError when the two arrays are not 1-D of the same length.
    """
    s = np.asarray(surprisal, dtype=np.float64)
    h = np.asarray(entropy, dtype=np.float64)
    if s.ndim != 1 or s.shape != h.shape:
        raise ValueError(f"surprisal and entropy must be 1-D of one length, got {s.shape} and {h.shape}")
    return {**_surprisal_features(s, h), "sentence_cv": sentence_cv(text), "hapax_ratio": hapax_ratio(text)}


def token_surprisal(model: nn.Module, tokens: list[int], prompt_tokens: list[int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(surprisal, entropy) of `tokens` under `model` as it is, at temperature 1, float32 logits.

    With `prompt_tokens` every text token is scored given the prompt; without,
    the first token has no prefix and is not scored (len(tokens) - 1 values).
    """
    prompt = list(prompt_tokens or [])
    seq = prompt + list(tokens)
    if not tokens or len(seq) < 2:
        return np.zeros(0), np.zeros(0)
    start = max(len(prompt), 1)  # index in seq of the first scored token
    head = mx.array([seq[: start - 1]], dtype=mx.int32)  # (1, start - 1)
    inputs = mx.array([seq[start - 1 : -1]], dtype=mx.int32)  # (1, L)
    targets = mx.array([seq[start:]], dtype=mx.int32)  # (1, L)
    logp, ent = completion_logprobs(model, prefix_kv(model, head), inputs, targets, 1.0, with_entropy=True)
    logp, ent = mx.stop_gradient(logp), mx.stop_gradient(ent)
    mx.eval(logp, ent)
    return -np.array(logp[0], dtype=np.float64), np.array(ent[0], dtype=np.float64)


def score_cadence(model: nn.Module, tokenizer, texts: list[str], prompt_tokens: list[int] | None = None
                  ) -> list[dict[str, float | None]]:
    """cadence_features of each text under the base model, one text at a time.

    Texts are tokenised without special tokens; a model with LoRA layers is run
    with them switched off. An empty (or blank) text gets every feature None.
    """
    def score_all() -> list[dict[str, float | None]]:
        out = []
        for text in texts:
            if not text.strip():
                out.append({k: None for k in FEATURES})
                continue
            s, h = token_surprisal(model, tokenizer.encode(text, add_special_tokens=False), prompt_tokens)
            out.append(cadence_features(s, h, text))
        return out

    if lora_modules(model):
        with adapters_off(model):
            return score_all()
    return score_all()


def mean_features(features: list[dict], keys: tuple[str, ...] = FEATURES) -> dict[str, float | None]:
    """Per key, the mean of the non-None values (a day's mean features); None when all are None."""
    out = {}
    for k in keys:
        vals = [f[k] for f in features if f.get(k) is not None]
        out[k] = float(np.mean(vals)) if vals else None
    return out


def cadence_distance(features: dict, human: list[dict], keys: tuple[str, ...] = FEATURES) -> float | None:
    """Root-mean-square z-score of `features` against the human set (its mean and population std).

    A key is skipped when the feature is None, the human set has no value for it,
    or the human std is 0. Returns None when no key is usable.
    """
    z = []
    for k in keys:
        x = features.get(k)
        ref = np.array([f[k] for f in human if f.get(k) is not None], dtype=np.float64)
        if x is None or ref.size == 0 or ref.std() == 0:
            continue
        z.append((x - ref.mean()) / ref.std())
    return float(np.sqrt(np.mean(np.square(z)))) if z else None


def template_share(vecs: np.ndarray, prompt_ids: list[str], threshold: float = 0.9) -> float | None:
    """Share of completions whose nearest completion of ANOTHER prompt has cosine above `threshold`.

    `vecs` (N, D) are unit embeddings, `prompt_ids` their N prompts. Returns None
    with fewer than two distinct prompts. Raises ValueError when the lengths differ.
    """
    v = np.asarray(vecs, dtype=np.float64)
    ids = np.asarray(prompt_ids)
    if v.ndim != 2 or v.shape[0] != ids.shape[0]:
        raise ValueError(f"vecs must be (N, D) with N = len(prompt_ids) = {ids.shape[0]}, got {v.shape}")
    if np.unique(ids).size < 2:
        return None
    cos = v @ v.T  # (N, N)
    cos[ids[:, None] == ids[None, :]] = -np.inf  # same prompt (the diagonal too) never counts
    return float((cos.max(axis=1) > threshold).mean())
