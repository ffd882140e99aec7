"""Varro's reward against known hacks, over the shipped sample with the real MiniLM.

Prints, one line each: the mean reward over every sample prompt (each headline
of 2026-11-02..07, scored by `varro.forecast.task.score_texts` against the next day) of
a templated forecast about a different story of the same day, of one fixed
generic paragraph and of the headline restated; the Calderra prompt's honest
forecast and a Kestmark rate forecast written for it; and, over the
hand-written honest forecasts of tests/forecast/varro_honest_forecasts.json, the honest
mean, each hack's mean and how often the honest forecast wins.

    scripts/env python bench/varro_hacks.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from common import REPO, emit

sys.path.insert(0, str(REPO / "tests" / "forecast"))

BENCH = "varro_hacks"


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def main() -> None:
    from varro_cases import HACKS, hack_texts, load_cases, load_sample, off_topic_template, sample_prompts, source

    from varro.engine.core.config import Config
    from varro.forecast.task import score_texts
    from varro.engine.store import open_db
    from varro.engine.embed.embedders import CachedEmbedder, SentenceEmbedder

    cfg = Config()
    data = load_cases()
    with tempfile.TemporaryDirectory() as tmp:
        db = open_db(Path(tmp) / "bench.db")
        load_sample(db)
        emb = CachedEmbedder(SentenceEmbedder(), db)
        prompts = sample_prompts(db, emb, cfg)
        by_key = {(p["day"], p["guid"]): p for p in prompts}

        def reward(p: dict, text: str) -> float:
            return score_texts(db, p, [text], emb, cfg)[0]["reward"]

        off, generic, restated = [], [], []
        developing = []  # whether the prompt's story has a next-day headline (else semantic is NULL)
        for p in prompts:
            s = source(p)
            same_day = [q for q in prompts if q["day"] == p["day"] and source(q)["story_id"] != s["story_id"]]
            other = same_day[(prompts.index(p) * 7) % len(same_day)]
            texts = [off_topic_template(source(other)), data["generic"], f"{s['title']}. {s['summary']}".strip()]
            got = score_texts(db, p, texts, emb, cfg)
            r = [c["reward"] for c in got]
            off.append(r[0]), generic.append(r[1]), restated.append(r[2])
            developing.append(got[0].get("target_fallback") == 0.0)
        n, k = len(prompts), sum(developing)
        for name, xs in [("off_topic_template", off), ("generic_paragraph", generic), ("restated_headline", restated)]:
            emit(BENCH, f"{name}_mean", mean(xs), "reward", f"{n} sample prompts")
            if 0 < k < n:  # only with the own-story reward (issue 13): the prompts whose story developed
                emit(BENCH, f"{name}_developing_mean", mean([x for x, d in zip(xs, developing) if d]), "reward",
                     f"{k} prompts whose story has a next-day headline")

        cal = data["calderra"]
        p = by_key[(cal["day"], cal["guid"])]
        emit(BENCH, "calderra_honest", reward(p, cal["honest"]), "reward", "the Calderra prompt")
        emit(BENCH, "calderra_kestmark", reward(p, cal["kestmark"]), "reward", "a Kestmark forecast for it")

        cases = data["cases"]
        honest, hacks = [], {h: [] for h in HACKS}
        for i, c in enumerate(cases):
            p = by_key[(c["day"], c["guid"])]
            texts = hack_texts(db, p, c["honest"], cases[(i + 1) % len(cases)]["honest"], c["paraphrase"],
                               data["generic"])
            honest.append(reward(p, c["honest"]))
            for h in HACKS:
                hacks[h].append(reward(p, texts[h]))
        emit(BENCH, "honest_mean", mean(honest), "reward", f"{len(cases)} hand-written honest forecasts")
        for h in HACKS:
            wins = sum(a > b for a, b in zip(honest, hacks[h]))
            emit(BENCH, f"{h}_mean", mean(hacks[h]), "reward",
                 f"honest - hack {mean(honest) - mean(hacks[h]):+.3f}; honest wins {wins}/{len(cases)}")


if __name__ == "__main__":
    main()
