"""Walter's reward (RLNVR): transfer what worked for an article, with the author's usual taken out.

1. Baseline normalisation. A historical post's engagement is a weighted sum of
   likes, reposts, replies and quotes. Against its author's usual engagement
   (the median over their other recent posts) on a log scale:
       w = clip( ln((1 + e) / (1 + baseline)) / ln(saturation), 0, 1 )
   A post that did worse than its author's usual gets 0; one that did
   `saturation` times better, or more, gets 1.
2. Max-similarity transfer. reward = max_i cos(candidate, post_i) * w_i: the
   single best-matching winner teaches, not the average.
3. Copying is not writing: a near-verbatim copy of a historical post (cosine
   above `copy_cosine`, or `copy_ngram` words in a row) is penalised.
4. Small, legible penalties: hashtags past the limit, repeated hashtags, emoji
   runs, bare URLs, over 300 graphemes, repeated n-grams, instruction echo.
"""

from __future__ import annotations

import math
import re
import unicodedata

import numpy as np

from varro.config import WalterConfig
from varro.rewards import longest_shared_ngram, repeated_ngram_rate, words

GRAPHEME_LIMIT = 300
HASHTAG_RE = re.compile(r"(?<![\w#])#(\w+)")
URL_RE = re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.IGNORECASE)
EMOJI_RUN_RE = re.compile(r"(?:[\U0001F000-\U0001FAFF\u2600-\u27BF][\uFE0F\u200D\U0001F3FB-\U0001F3FF]*){3,}")
ASK = "Write a Bluesky post about this article."
ECHO_RE = re.compile(r"\b(?:bluesky post|write a post|about this article|here(?:'s| is) (?:a|my|the) post|"
                     r"as an ai|article\s*:)", re.IGNORECASE)


def engagement(likes: int | None, reposts: int | None, replies: int | None, quotes: int | None,
               cfg: WalterConfig) -> float | None:
    """The weighted engagement of a post; None when any count is unknown (never a silent zero)."""
    counts = (likes, reposts, replies, quotes)
    if any(c is None for c in counts):
        return None
    return (cfg.like_weight * likes + cfg.repost_weight * reposts + cfg.reply_weight * replies
            + cfg.quote_weight * quotes)


def post_weight(engagement_: float, baseline: float, saturation: float) -> float:
    """How much better than its author's usual a post did, in [0, 1] (see the module docstring)."""
    if saturation <= 1.0:
        raise ValueError(f"saturation must be above 1, got {saturation}")
    if engagement_ < 0 or baseline < 0:
        raise ValueError(f"engagement and baseline must be non-negative, got {engagement_}, {baseline}")
    return float(np.clip(math.log((1.0 + engagement_) / (1.0 + baseline)) / math.log(saturation), 0.0, 1.0))


def max_similarity_reward(candidate_embedding, post_embeddings, weights) -> float:
    """max_i cos(candidate, post_i) * w_i; 0.82 similarity at weight 0.9 gives 0.738.

    Embeddings need not be normalised; raises ValueError for mismatched shapes or no posts.
    """
    return best_transfer(candidate_embedding, post_embeddings, weights)[0]


def best_transfer(candidate_embedding, post_embeddings, weights) -> tuple[float, int, float]:
    """(reward, index of the teaching post, its cosine)."""
    c = np.asarray(candidate_embedding, dtype=np.float64)
    p = np.atleast_2d(np.asarray(post_embeddings, dtype=np.float64))
    w = np.asarray(weights, dtype=np.float64)
    if p.shape[0] == 0 or p.shape[0] != w.shape[0] or p.shape[1] != c.shape[0]:
        raise ValueError(f"need posts (n, d) matching weights (n,) and a candidate (d,): got {p.shape}, "
                         f"{w.shape}, {c.shape}")
    cos = (p @ c) / (np.linalg.norm(p, axis=1) * np.linalg.norm(c) + 1e-12)
    scores = cos * w
    i = int(np.argmax(scores))
    return float(scores[i]), i, float(cos[i])


def graphemes(text: str) -> int:
    """User-perceived characters, approximately: combining marks, ZWJ sequences, variation
    selectors and skin-tone modifiers join the character before them."""
    n = 0
    joined = False
    for ch in text:
        if unicodedata.combining(ch) or ch in "\uFE0E\uFE0F" or "\U0001F3FB" <= ch <= "\U0001F3FF":
            continue
        if ch == "\u200d":
            joined = True
            continue
        if joined:
            joined = False
            continue
        n += 1
    return n


def copy_score(text: str, cosines: np.ndarray, posts: list[str], cfg: WalterConfig) -> float:
    """1 when the candidate is a near-verbatim copy of some historical post, else 0."""
    if len(cosines) and float(np.max(cosines)) >= cfg.copy_cosine:
        return 1.0
    n = len(words(text))
    need = min(cfg.copy_ngram, max(4, n))  # a short candidate copied whole is still a copy
    return 1.0 if any(longest_shared_ngram(text, p) >= need for p in posts) else 0.0


def penalties(text: str, cfg: WalterConfig) -> dict[str, float]:
    """The small penalties, each a legible number of its own."""
    tags = [t.lower() for t in HASHTAG_RE.findall(text)]
    return {
        "pen_hashtags": 0.1 * max(0, len(tags) - cfg.hashtag_limit),
        "pen_repeated_hashtags": 0.2 if len(tags) != len(set(tags)) else 0.0,
        "pen_emoji_run": 0.2 if EMOJI_RUN_RE.search(text) else 0.0,
        "pen_bare_url": 0.2 if URL_RE.search(text) else 0.0,
        "pen_too_long": 0.5 if graphemes(text) > GRAPHEME_LIMIT else 0.0,
        "pen_repeated_ngrams": round(0.5 * repeated_ngram_rate(text, 3), 6),
        "pen_echo": 0.3 if ECHO_RE.search(text) else 0.0,
    }


def score_post(text: str, text_vec: np.ndarray, post_vecs: np.ndarray, post_texts: list[str],
               weights: np.ndarray, cfg: WalterConfig) -> dict[str, float]:
    """All components and the reward of one candidate post against its article's history."""
    if not text.strip():
        transfer, best, cos = 0.0, -1, 0.0
        cosines = np.zeros(0)
    else:
        transfer, best, cos = best_transfer(text_vec, post_vecs, weights)
        cosines = np.asarray(post_vecs) @ np.asarray(text_vec)
    copy = copy_score(text, cosines, post_texts, cfg) if text.strip() else 0.0
    pens = penalties(text, cfg)
    reward = transfer - cfg.copy_weight * copy - sum(pens.values())
    return {
        "reward": reward,
        "transfer": transfer,
        "teacher": float(best),
        "teacher_cosine": cos,
        "teacher_weight": float(weights[best]) if best >= 0 else 0.0,
        "copy": copy,
        **pens,
        "hashtags": float(len(HASHTAG_RE.findall(text))),
        "graphemes": float(graphemes(text)),
        "words": float(len(words(text))),
    }
