"""The toy task: a reward that counts target words, for the engine's demo and learning test.

It has no real-world signal; it exists so the engine can be shown to learn
(and tested) in seconds on the tiny model, offline.
"""

from __future__ import annotations

import re

TOY_TARGET = frozenset({"strike", "port", "workers", "bank", "rates", "central", "market", "prices"})

TOY_PROMPTS = [
    "Write one sentence about the port strike.",
    "Write one sentence about the central bank.",
    "Write one sentence about market prices.",
    "Write one sentence about the workers' talks.",
    "Write one sentence about interest rates.",
    "Write one sentence about tomorrow's news.",
]

WORD_RE = re.compile(r"[a-z']+")


def toy_reward(text: str, target: frozenset[str] = TOY_TARGET) -> float:
    """How many words of `text` are in `target` (each occurrence counts)."""
    return float(sum(1 for w in WORD_RE.findall(text.lower()) if w in target))
