"""Walter's reward (RLNVR): transfer what worked for an article, with the author's usual taken out.

1. Baseline normalisation. A historical post's engagement e is a weighted sum
   of likes, reposts, replies and quotes, read at its age t. Its author's usual
   b is the mean engagement of their other recent posts brought to the same age
   t (`walter.ingest.baseline_stats`), resting on n posts with spread s. The
   weight is how far the post beat its author's usual, on a log scale:
       L   = ln((k + e) / (k + b))                    k = weight_pseudo_count
       se2 = (s^2 + (k + b)) / (n (k + b)^2)          s^2 := (k + b)^2 / k when n = 1
       rho = trigamma(k) / (trigamma(k) + se2)
       w   = clip(rho * L / ln(saturation), 0, 1)
   Why: model a post's engagement as Poisson(b * q) with its multiplier
   q ~ Gamma(k, k) (mean 1: engagement counts are then negative binomial). The
   posterior mean of q given e is (k + e) / (k + b): the pseudo-count k shrinks a
   small account's lucky post (e = 3 over b = 0 is not "4x its usual") and
   vanishes for large accounts, so the prior scales with the account's own
   level rather than pulling everyone toward one population value. rho is
   the normal-approximation reliability of L: trigamma(k) is the prior
   variance of ln q, se2 the variance of ln(k + b) from n posts of spread s (with
   a Poisson floor k + b, and the prior's own spread for a lone post). As n and
   the counts grow, w tends to the unshrunk clip(ln((1 + e)/(1 + b)) / ln(sat)).
   The usual is the author's expected engagement (the mean): for small accounts
   the old median was 0 for any usual below ~0.7, which is what let one like
   look like a breakthrough; an outlier in the baseline raises s and so lowers
   rho instead of being ignored. `post_weight` without n keeps the old formula.
2. Max-similarity transfer. reward = max_i cos(candidate, post_i) * w_i: the
   single best-matching winner teaches, not the average.
3. Copying is not writing. A graded copy score in [0, 1], the largest of:
   cosine to a historical post ramped from `copy_cosine_start` to
   `copy_cosine_full`; the share of the candidate's word 3-grams found in one
   historical post, ramped; the share of its words found in order in one post
   (longest common subsequence; dropping every 3rd word leaves no 3-gram but
   keeps every word in order), ramped; and 1 for `copy_ngram` words in a row.
   The penalty is `copy_weight` times that score.
4. Small, legible penalties (weights in WalterConfig): hashtags past the
   limit, repeated hashtags, emoji runs, bare URLs, over 300 graphemes,
   repeated 3-grams, instruction echo.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import TYPE_CHECKING

import numpy as np

from varro.engine.config import WalterConfig
from varro.engine.rewards import longest_shared_ngram, ngrams, repeated_ngram_rate, words

if TYPE_CHECKING:
    from .ingest import BaselineStats

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


def trigamma(x: float) -> float:
    """The trigamma function psi'(x) for x > 0: the variance of ln q for q ~ Gamma(x, x).

    Recurrence psi'(x) = psi'(x + 1) + 1/x^2 up to x >= 10, then the asymptotic series
    to 1/x^9 (error below 1e-12 there). Raises ValueError for x <= 0.
    """
    if not x > 0:
        raise ValueError(f"trigamma needs x > 0, got {x}")
    acc = 0.0
    while x < 10.0:
        acc += 1.0 / (x * x)
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    return acc + inv + inv2 / 2 + inv * inv2 * (1 / 6 - inv2 * (1 / 30 - inv2 * (1 / 42 - inv2 / 30)))


def post_weight(engagement_: float, baseline: float, saturation: float, *, pseudo_count: float = 1.0,
                n_baseline: int | None = None, spread: float | None = None) -> float:
    """How much better than its author's usual a post did, in [0, 1] (see the module docstring).

    Without `n_baseline`: clip(ln((c + e)/(c + b)) / ln(saturation), 0, 1) with c =
    `pseudo_count` (1: the unshrunk formula). With `n_baseline` (the posts the
    baseline rests on) and `spread` (their standard deviation, None for one post),
    the log ratio is also shrunk by its reliability rho. Raises ValueError for a
    saturation <= 1, negative counts, pseudo_count <= 0 or n_baseline < 1.
    """
    if saturation <= 1.0:
        raise ValueError(f"saturation must be above 1, got {saturation}")
    if engagement_ < 0 or baseline < 0:
        raise ValueError(f"engagement and baseline must be non-negative, got {engagement_}, {baseline}")
    if pseudo_count <= 0:
        raise ValueError(f"pseudo_count must be positive, got {pseudo_count}")
    k = pseudo_count
    log_ratio = math.log((k + engagement_) / (k + baseline))
    if n_baseline is not None:
        log_ratio *= reliability(baseline, n_baseline, spread, k)
    return float(np.clip(log_ratio / math.log(saturation), 0.0, 1.0))


def reliability(baseline: float, n_baseline: int, spread: float | None, pseudo_count: float) -> float:
    """rho in (0, 1]: the share of a post's log ratio to its author's usual that the evidence supports.

    rho = trigamma(k) / (trigamma(k) + se2), se2 = (s^2 + k + b) / (n (k + b)^2), where a
    lone post (n = 1, or spread None) takes the prior's spread s^2 = (k + b)^2 / k.
    """
    if n_baseline < 1:
        raise ValueError(f"a baseline rests on at least one post, got n_baseline={n_baseline}")
    if spread is not None and spread < 0:
        raise ValueError(f"spread must be non-negative, got {spread}")
    level = pseudo_count + baseline
    var = level * level / pseudo_count if n_baseline == 1 or spread is None else spread * spread
    se2 = (var + level) / (n_baseline * level * level)
    prior = trigamma(pseudo_count)
    return prior / (prior + se2)


def fair_weight(engagement_: float, baseline: BaselineStats, cfg: WalterConfig) -> float:
    """`post_weight` of a post against its author's age-matched baseline, shrunk by its evidence."""
    return post_weight(engagement_, baseline.usual, cfg.weight_saturation, pseudo_count=cfg.weight_pseudo_count,
                       n_baseline=baseline.n, spread=baseline.spread)


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


def ramp(value: float, start: float, full: float) -> float:
    """0 at or below `start`, 1 at or above `full`, linear between. Raises ValueError unless start < full."""
    if not start < full:
        raise ValueError(f"a ramp needs start < full, got {start}, {full}")
    return float(np.clip((value - start) / (full - start), 0.0, 1.0))


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel, Hyyro 2004)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def copy_measures(text: str, posts: list[str], min_words: int) -> dict[str, float]:
    """Raw overlap of a candidate with its closest historical post, each a max over posts.

    trigram_containment: share of the candidate's word 3-grams found in one post;
    order_containment: share of its words found in order in one post (LCS);
    shared_run: the longest run of words shared with one post. Shares are over at
    least `min_words` words (3-grams: min_words - 2), so a short candidate is
    not a copy for having its three words somewhere in a long post.
    """
    tokens = [w.lower() for w in words(text)]
    grams = set(ngrams(tokens, 3))
    gram_den = max(len(ngrams(tokens, 3)), min_words - 2, 1)
    word_den = max(len(tokens), min_words, 1)
    out = {"trigram_containment": 0.0, "order_containment": 0.0, "shared_run": 0.0}
    for post in posts:
        post_tokens = [w.lower() for w in words(post)]
        out["trigram_containment"] = max(out["trigram_containment"],
                                         len(grams & set(ngrams(post_tokens, 3))) / gram_den)
        out["order_containment"] = max(out["order_containment"], lcs_length(tokens, post_tokens) / word_den)
        out["shared_run"] = max(out["shared_run"], float(longest_shared_ngram(text, post)))
    return out


def copy_components(text: str, cosines: np.ndarray, posts: list[str], cfg: WalterConfig) -> dict[str, float]:
    """The graded copy score ("copy", in [0, 1]) with the parts it is the largest of, and their raw measures."""
    measures = copy_measures(text, posts, cfg.copy_ngram)
    max_cos = float(np.max(cosines)) if len(cosines) else 0.0
    need = min(cfg.copy_ngram, max(4, len(words(text))))  # a short candidate copied whole is still a copy
    parts = {
        "copy_cosine": ramp(max_cos, cfg.copy_cosine_start, cfg.copy_cosine_full),
        "copy_containment": ramp(measures["trigram_containment"], cfg.copy_containment_start,
                                 cfg.copy_containment_full),
        "copy_order": ramp(measures["order_containment"], cfg.copy_order_start, cfg.copy_order_full),
        "copy_run": 1.0 if measures["shared_run"] >= need else 0.0,
    }
    return {"copy": max(parts.values()), **parts, "max_cosine": max_cos, **measures}


def copy_score(text: str, cosines: np.ndarray, posts: list[str], cfg: WalterConfig) -> float:
    """How much the candidate is a copy of some historical post, in [0, 1] (see the module docstring)."""
    return copy_components(text, cosines, posts, cfg)["copy"]


def penalties(text: str, cfg: WalterConfig) -> dict[str, float]:
    """The small penalties, each a legible number of its own (weights from `cfg`)."""
    tags = [t.lower() for t in HASHTAG_RE.findall(text)]
    return {
        "pen_hashtags": cfg.hashtag_penalty * max(0, len(tags) - cfg.hashtag_limit),
        "pen_repeated_hashtags": cfg.repeated_hashtag_penalty if len(tags) != len(set(tags)) else 0.0,
        "pen_emoji_run": cfg.emoji_run_penalty if EMOJI_RUN_RE.search(text) else 0.0,
        "pen_bare_url": cfg.bare_url_penalty if URL_RE.search(text) else 0.0,
        "pen_too_long": cfg.too_long_penalty if graphemes(text) > GRAPHEME_LIMIT else 0.0,
        "pen_repeated_ngrams": round(cfg.repeated_ngram_penalty * repeated_ngram_rate(text, 3), 6),
        "pen_echo": cfg.echo_penalty if ECHO_RE.search(text) else 0.0,
    }


def score_post(text: str, text_vec: np.ndarray, post_vecs: np.ndarray, post_texts: list[str],
               weights: np.ndarray, cfg: WalterConfig) -> dict[str, float]:
    """All components and the reward of one candidate post against its article's history.

    reward = transfer - copy_weight * copy - sum(pen_*); the copy parts and their raw
    measures are stored beside it.
    """
    if not text.strip():
        transfer, best, cos = 0.0, -1, 0.0
        copy = {"copy": 0.0, **dict.fromkeys(("copy_cosine", "copy_containment", "copy_order", "copy_run",
                                               "max_cosine", "trigram_containment", "order_containment",
                                               "shared_run"), 0.0)}
    else:
        transfer, best, cos = best_transfer(text_vec, post_vecs, weights)
        copy = copy_components(text, np.asarray(post_vecs) @ np.asarray(text_vec), post_texts, cfg)
    pens = penalties(text, cfg)
    reward = transfer - cfg.copy_weight * copy["copy"] - sum(pens.values())
    return {
        "reward": reward,
        "transfer": transfer,
        "teacher": float(best),
        "teacher_cosine": cos,
        "teacher_weight": float(weights[best]) if best >= 0 else 0.0,
        **copy,
        **pens,
        "hashtags": float(len(HASHTAG_RE.findall(text))),
        "graphemes": float(graphemes(text)),
        "words": float(len(words(text))),
    }
