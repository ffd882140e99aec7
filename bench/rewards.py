"""Reward scoring throughput: completions scored per second by Varro's `score_texts`, cache cold and warm.

The real reward: MiniLM (all-MiniLM-L6-v2 through sentence-transformers, on
the CPU) behind the SQLite embedding cache, scoring forecast-length texts for
a sample prompt of 2026-11-02 against the 2026-11-03 sample headlines. Cold: a
fresh database, so every completion, the source and the next day's headlines
are embedded; warm: the same texts again, every embedding read from the cache.
Groups of 8, as the nightly scores them; the embedder's load time is reported
on its own.

    scripts/env python bench/rewards.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import Timer, emit, headlines, synthetic_corpus

BENCH = "rewards"
DAY, NEXT_DAY = "2026-11-02", "2026-11-03"


def forecast_texts(n: int) -> list[str]:
    """`n` distinct forecast-like texts of about 100 words (sample summaries plus pseudo-words)."""
    summaries = [h["summary"] for h in headlines(200) if h.get("summary")]
    filler = synthetic_corpus(lines=n, seed=1)
    return [f"{summaries[i % len(summaries)]} Prices rise about {i % 9 + 2}% by Friday. {filler[i]} "
            f"{summaries[(i * 7 + 3) % len(summaries)]}" for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--completions", type=int, default=256)
    ap.add_argument("--group", type=int, default=8)
    a = ap.parse_args()

    from varro.engine.core.config import Config
    from varro.forecast.task import build_prompt, score_texts
    from varro.engine.store import open_db
    from varro.engine.embed.embedders import CachedEmbedder, SentenceEmbedder
    from varro.forecast.headlines import headlines_for_day
    from varro.forecast.sample import load_sample_day

    cfg = Config()
    texts = forecast_texts(a.completions)
    with Timer() as t:
        inner = SentenceEmbedder()
    emit(BENCH, "embedder_load", t.s, "s", "all-MiniLM-L6-v2, once per process")
    inner.encode(["warm-up"])
    with tempfile.TemporaryDirectory() as tmp:
        db = open_db(Path(tmp) / "bench.db")
        load_sample_day(db, DAY)
        load_sample_day(db, NEXT_DAY)
        h = headlines_for_day(db, DAY)[0]
        prompt = {"day": DAY, "text": build_prompt(h["title"], h["summary"]),
                  "source_json": json.dumps({"title": h["title"], "summary": h["summary"]})}
        embedder = CachedEmbedder(inner, db)
        for state in ("cold", "warm"):
            with Timer() as t:
                for start in range(0, len(texts), a.group):
                    score_texts(db, prompt, texts[start : start + a.group], embedder, cfg)
            emit(BENCH, f"{state}_completions_s", len(texts) / t.s, "completions/s",
                 f"{len(texts)} completions in groups of {a.group}, {len(headlines_for_day(db, NEXT_DAY))} "
                 f"target headlines; cache hits {embedder.hits}, misses {embedder.misses}")
            embedder.hits = embedder.misses = 0


if __name__ == "__main__":
    main()
