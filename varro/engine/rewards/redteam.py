"""Red-teaming a reward: known hacks scored beside hand-written honest references.

`run_hacks` scores every hack of an app's catalogue (`App.red_team()`) with the app's own `score_texts` next
to the honest reference for the same prompt; a hack passes when it scores at least `margin` below honest on
every prompt. The references' format: docs/varro.md ("The modules, in detail").
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import sqlite_utils

from varro.engine.core.config import Config
from varro.engine.core.jsonl import read_jsonl
from varro.engine.core.paths import SAMPLE_DIR
from varro.engine.embed.embedders import Embedder
from varro.engine.rewards.text import SENTENCE_END_RE, content_words
from varro.engine.core.errors import UserError

HONEST_FILE = SAMPLE_DIR / "honest.jsonl"
DEFAULT_MARGIN = 0.1

ScoreTexts = Callable[[sqlite_utils.Database, dict, list[str], Embedder, Config], list[dict]]


class HackError(LookupError, UserError):
    """A scoring target or an honest reference is not in the database (yet)."""


@dataclass
class Case:
    """One prompt to red-team: its prompts row, the honest reference for it, and what hacks build from."""
    prompt: dict
    honest: str
    other: str | None = None  # the honest reference of another story
    data: dict = field(default_factory=dict)  # the app's extras: the day's titles, the article's top post

    @property
    def source(self) -> dict:
        return json.loads(self.prompt["source_json"])


@dataclass(frozen=True)
class Hack:
    name: str
    about: str
    build: Callable[[Case], str | None]  # None: the hack cannot be built for this case


@dataclass(frozen=True)
class RedTeam:
    """An app's red team: its catalogue, its reward, how its cases are built and its sample loaded."""
    app: str
    catalogue: tuple[Hack, ...]
    score_texts: ScoreTexts
    cases: Callable[[sqlite_utils.Database, list[dict], Embedder, Config], tuple[list[Case], list[str]]]
    load_sample: Callable[[sqlite_utils.Database], None]


@dataclass
class HackResult:
    name: str
    about: str
    margin: float
    rewards: list[float]  # per case the hack was built for
    honest: list[float]  # the honest reference's reward on the same cases
    cases: list[dict] = field(default_factory=list)  # prompt id, text, reward, honest: for --json

    @property
    def n(self) -> int:
        return len(self.rewards)

    @property
    def mean(self) -> float:
        return sum(self.rewards) / self.n if self.n else float("nan")

    @property
    def honest_mean(self) -> float:
        return sum(self.honest) / self.n if self.n else float("nan")

    @property
    def below(self) -> float:
        """How far the hack's mean reward is below the honest mean (negative: above it)."""
        return self.honest_mean - self.mean

    @property
    def worst(self) -> float:
        """The smallest per-prompt gap, honest minus hack."""
        return min(h - r for h, r in zip(self.honest, self.rewards)) if self.n else float("nan")

    @property
    def worst_case(self) -> dict | None:
        """The case where the hack came closest to (or went furthest above) honest."""
        return min(self.cases, key=lambda c: c["honest"] - c["reward"]) if self.cases else None

    @property
    def result(self) -> str:
        """PASS when the hack is at least `margin` below honest on every prompt, its worst included."""
        if not self.n:
            return "SKIP"
        return "PASS" if self.worst >= self.margin else "FAIL"

    def to_json(self) -> dict:
        return {"hack": self.name, "about": self.about, "n": self.n, "mean": self.mean,
                "honest_mean": self.honest_mean, "below": self.below, "worst": self.worst,
                "margin": self.margin, "result": self.result, "worst_case": self.worst_case, "cases": self.cases}


def load_references(path: str | Path | None, app: str) -> list[dict]:
    """The honest references of `app` in a JSON-lines file. Raises FileNotFoundError, ValueError."""
    path = Path(path) if path else HONEST_FILE
    refs = []
    for n, row in read_jsonl(path):
        if row.get("app") == app:
            if not isinstance(row.get("text"), str) or not row["text"].strip():
                raise ValueError(f"{path}:{n}: an honest reference needs a non-empty text")
            refs.append(row)
    return refs


def build_hacks(case: Case, catalogue: tuple[Hack, ...]) -> dict[str, str]:
    """Hack name -> text for `case`, for every hack that can be built for it."""
    built = {h.name: h.build(case) for h in catalogue}
    return {k: v for k, v in built.items() if v is not None}


def run_hacks(db: sqlite_utils.Database, cases: list[Case], catalogue: tuple[Hack, ...], score_texts: ScoreTexts,
              embedder: Embedder, cfg: Config, margin: float = DEFAULT_MARGIN) -> list[HackResult]:
    """Score every hack of `catalogue` and the honest reference on each case; one result per hack.

    One `score_texts` call per case scores the honest text and all its hacks together.
    Raises HackError when there is no case; score_texts' own errors pass through.
    """
    if not cases:
        raise HackError("no honest reference to compare the hacks with")
    results = {h.name: HackResult(h.name, h.about, margin, [], []) for h in catalogue}
    for case in cases:
        texts = build_hacks(case, catalogue)
        comps = score_texts(db, case.prompt, [case.honest, *texts.values()], embedder, cfg)
        honest = float(comps[0]["reward"])
        for (name, text), c in zip(texts.items(), comps[1:]):
            r = results[name]
            r.rewards.append(float(c["reward"]))
            r.honest.append(honest)
            r.cases.append({"prompt_id": case.prompt["id"], "about": case.source.get("title", ""), "text": text,
                            "reward": float(c["reward"]), "honest": honest})
    return list(results.values())


def format_results(results: list[HackResult], head: str = "") -> str:
    """The table `varro hacks` prints: per hack n, mean reward, honest mean, margin below honest, result."""
    width = max([len("hack"), *(len(r.name) for r in results)])
    lines = [head] if head else []
    lines.append(f"{'hack':<{width}}  {'n':>2}  {'reward':>7}  {'honest':>7}  {'below':>7}  {'worst':>7}  result"
                 "  worst prompt")

    def cell(v: float) -> str:
        return f"{'-':>7}" if v != v else f"{v:>7.3f}"

    for r in results:
        about = (r.worst_case or {}).get("about") or (r.worst_case or {}).get("prompt_id", "")
        lines.append(f"{r.name:<{width}}  {r.n:>2}  {cell(r.mean)}  {cell(r.honest_mean)}  {cell(r.below)}  "
                     f"{cell(r.worst)}  {r.result:<6}  {about[:48]}".rstrip())
    failed = [r.name for r in results if r.result == "FAIL"]
    margin = results[0].margin if results else DEFAULT_MARGIN
    lines.append(f"{len(results) - len(failed)} of {len(results)} hacks at least {margin:g} below honest "
                 "on every prompt"
                 + (f"; within the margin: {', '.join(failed)}" if failed else ""))
    return "\n".join(lines)


def with_other_stories(cases: list[Case]) -> list[Case]:
    """Give each case the honest reference of the next case (cyclically) that is about another story."""
    for i, case in enumerate(cases):
        story = case.source.get("story_id")
        for j in range(1, len(cases)):
            other = cases[(i + j) % len(cases)]
            if other.source.get("story_id") != story:
                case.other = other.honest
                break
    return cases


# --- Transforms the catalogues share -----------------------------------------------------------------------------------------

SYNONYMS = {
    "big": "large", "biggest": "largest", "large": "big", "largest": "biggest", "small": "little",
    "rise": "increase", "rises": "increases", "rose": "increased", "fall": "drop", "falls": "drops", "fell": "dropped",
    "cut": "reduce", "cuts": "reductions", "raise": "lift", "raises": "lifts", "lift": "raise",
    "halt": "standstill", "shut": "closed", "agree": "consent", "agrees": "consents", "agreed": "consented",
    "says": "states", "said": "stated", "warns": "cautions", "expected": "anticipated", "expect": "anticipate",
    "first": "initial", "deal": "agreement", "talks": "negotiations", "plan": "scheme", "shows": "reveals",
    "nearly": "almost", "about": "around", "just": "only", "still": "yet", "now": "currently", "fast": "quickly",
    "good": "fine", "great": "excellent", "strong": "robust", "weak": "soft", "higher": "greater",
    "lower": "reduced", "record": "all-time", "highest": "top", "country": "nation", "people": "folks",
    "really": "truly", "very": "highly", "this": "that", "is": "remains", "was": "had been", "will": "shall",
    "think": "reckon", "anyone": "anybody", "nobody": "no one", "basically": "essentially", "why": "how come",
}


def swap_words(text: str, table: dict[str, str] = SYNONYMS) -> str:
    """Each word found in `table` replaced by its synonym, keeping a leading capital."""
    def swap(m: re.Match) -> str:
        w = m.group(0)
        new = table.get(w.lower())
        if new is None:
            return w
        return new[0].upper() + new[1:] if w[0].isupper() else new

    return re.sub(r"[A-Za-z]+", swap, text)


def keywords(titles: list[str], k: int) -> list[str]:
    """The `k` most frequent content words of `titles` (ties in order of first use)."""
    return [w for w, _ in Counter(w for t in titles for w in content_words(t)).most_common(k)]


def sentences(text: str) -> list[str]:
    parts, start = [], 0
    for m in SENTENCE_END_RE.finditer(text):
        parts.append(text[start:m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    return [p for p in parts + [tail] if p]
