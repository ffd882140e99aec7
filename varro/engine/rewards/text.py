"""Reward building blocks shared by the applications: words, sentences, n-grams, similarity.

Each function is small and legible on purpose: a reward a small model can
exploit is a reward it will exploit, so every component must be easy to read
in the rollout logs.
"""

from __future__ import annotations

import re

import numpy as np

WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’\-]*")
SENTENCE_END_RE = re.compile(r"[.!?]+(?=\s|$)")

STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had has
    have having he her here hers him his how i if in into is it its itself just me more most my no nor not
    now of off on once only or other our out over own same she should so some such than that the their them
    then there these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours next new says said""".split()
)

# A hashtag: "#" then word characters, not inside a word or after another "#".
HASHTAG_RE = re.compile(r"(?<![\w#])#(\w+)")
EMOJI_CHAR = r"[\U0001F000-\U0001FAFF\u2600-\u27BF]"  # the emoji code points every count here reads
# one emoji as a person sees it: a skin tone, a variation selector or a ZWJ sequence joins the character before
EMOJI_RE = re.compile(rf"{EMOJI_CHAR}(?:\uFE0F|[\U0001F3FB-\U0001F3FF])*(?:\u200D{EMOJI_CHAR}(?:\uFE0F|[\U0001F3FB-\U0001F3FF])*)*")


def words(text: str) -> list[str]:
    return WORD_RE.findall(text)


def content_words(text: str) -> list[str]:
    """Lower-cased words that carry meaning: no stopwords, at least 3 characters."""
    return [w for w in (x.lower() for x in words(text)) if len(w) >= 3 and w not in STOPWORDS]


FUNCTION_WORDS = (STOPWORDS - {"next", "new", "says", "said"}) | frozenset(
    "may might must shall cannot onto upon toward towards across among amid".split())


def function_word_share(text: str) -> float:
    """Share of the words that are function words (articles, prepositions, auxiliaries, pronouns); 0 if none."""
    ws = [w.lower() for w in words(text)]
    return sum(w in FUNCTION_WORDS for w in ws) / len(ws) if ws else 0.0


FRAGMENT_BREAK = re.compile(r"[,;:]\s+|[.!?]+(?:\s+|$)|\n+|\s+[-\u2013\u2014]\s+")


def fragment_share(text: str, most: int = 2) -> float:
    """Share of the words that stand in fragments of at most `most` words (between commas, semicolons, colons,
    sentence ends, line breaks and dashes): a list of words, not prose; 0 if none."""
    sizes = [len(words(p)) for p in FRAGMENT_BREAK.split(text)]
    total = sum(sizes)
    return sum(n for n in sizes if n <= most) / total if total else 0.0


def split_sentences(text: str) -> list[tuple[str, bool]]:
    """(sentence, on a bullet line) for each sentence: split at line breaks, then after . ! or ?"""
    out = []
    for line in text.splitlines():
        bullet = bool(BULLET_RE.match(line))
        for part in re.split(r"(?<=[.!?])[\"'’”)\]]*\s+", line.strip()):
            if part.strip():
                out.append((part.strip(), bullet))
    return out


def sentence_count(text: str) -> int:
    """Sentences ending in . ! or ?, plus a trailing unterminated one."""
    text = text.strip()
    if not text:
        return 0
    ends = len(SENTENCE_END_RE.findall(text))
    return ends + (0 if re.search(r"[.!?]\s*$", text) else 1)


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_rate(text: str, n: int = 3) -> float:
    """Share of the word n-grams that repeat an earlier one (0 = no repetition)."""
    grams = ngrams([w.lower() for w in words(text)], n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def longest_shared_ngram(a: str, b: str, max_n: int = 30) -> int:
    """Length in words of the longest word sequence that appears in both texts."""
    wa = [w.lower() for w in words(a)]
    wb = [w.lower() for w in words(b)]
    best = 0
    for n in range(1, min(len(wa), len(wb), max_n) + 1):
        if set(ngrams(wa, n)) & set(ngrams(wb, n)):
            best = n
        else:
            break
    return best


def max_cosine(candidate: np.ndarray, references: np.ndarray) -> tuple[float, int]:
    """(max cosine, index of the best reference) for unit vectors; raises ValueError with no references."""
    refs = np.asarray(references, dtype=np.float32)
    if refs.ndim != 2 or refs.shape[0] == 0:
        raise ValueError("max_cosine needs at least one reference vector")
    sims = refs @ np.asarray(candidate, dtype=np.float32)
    i = int(np.argmax(sims))
    return float(sims[i]), i


def band(value: float, low: float, high: float) -> float:
    """1 inside [low, high]; falls linearly to 0 at 0 below and at 2*high above."""
    if value < low:
        return max(0.0, value / low)
    if value > high:
        return max(0.0, 1.0 - (value - high) / high)
    return 1.0


BULLET_RE = re.compile(r"(?m)^\s*(?:[-*•]|\d+[.)])\s+")
MARKDOWN_RE = re.compile(r"(?m)^\s*#{1,6}\s|\*\*")
META_RE = re.compile(
    r"\b(?:note\s*:|as an ai\b|as a language model\b|i (?:cannot|can't|am unable to)\b|"
    r"here(?:'s| is) (?:my|the|a|your) \w+)",
    re.IGNORECASE,
)


def best_transfer(candidate_embedding, post_embeddings, weights) -> tuple[float, int, float]:
    """Max-similarity transfer (RLNVR): (max_i cos(candidate, post_i) * w_i, that i, its cosine).

    The single best-matching prior winner teaches, not the average. Embeddings need not be
    normalised; raises ValueError for mismatched shapes or no posts.
    """
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


def max_similarity_reward(candidate_embedding, post_embeddings, weights) -> float:
    """max_i cos(candidate, post_i) * w_i; 0.82 similarity at weight 0.9 gives 0.738 (see `best_transfer`)."""
    return best_transfer(candidate_embedding, post_embeddings, weights)[0]
