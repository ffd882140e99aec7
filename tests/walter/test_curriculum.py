"""The curriculum: regret raises an article's odds, the floor keeps every article in play."""

import json

import numpy as np
import pytest

from varro.engine import store as dbm
from walter.task import article_stats, pick_articles


def add_group(db, run, day, url, rewards):
    pid = f"walter:{day}:{url}"
    dbm.upsert_prompts(db, [{"id": pid, "app": "walter", "day": day, "split": "train", "text": "t",
                             "source_json": {"url_norm": url}}])
    for i, r in enumerate(rewards):
        db["rollouts"].insert({"run": run, "day": day, "prompt_id": pid, "group_index": i, "reward": r,
                               "completion": "x"})


@pytest.fixture
def db(tmp_path):
    d = dbm.open_db(tmp_path / "v.db")
    add_group(d, "r", "2026-11-02", "https://a.example/flat", [0.3, 0.3, 0.31, 0.3])
    add_group(d, "r", "2026-11-02", "https://a.example/hard", [0.0, 0.9, 0.1, 0.0])
    add_group(d, "r", "2026-10-01", "https://a.example/old", [0.0, 1.0, 0.0, 0.0])  # outside the window
    return d


def test_stats_read_regret_and_variance_in_the_window(db):
    stats = article_stats(db, "r", "2026-11-03", window_days=7)
    assert set(stats) == {"https://a.example/flat", "https://a.example/hard"}
    hard = np.array([0.0, 0.9, 0.1, 0.0])
    assert stats["https://a.example/hard"].regret == pytest.approx(hard.max() - hard.mean())
    assert stats["https://a.example/hard"].variance == pytest.approx(hard.var())


def test_odds_rise_with_regret_and_every_article_can_be_picked(db):
    cands = ["https://a.example/flat", "https://a.example/hard", "https://a.example/new"]
    chosen = pick_articles(db, "r", "2026-11-03", cands, k=1, floor=0.1, window_days=7,
                           rng=np.random.default_rng(0))
    log = {r["url_norm"]: r for r in db.query("select * from curriculum where day = '2026-11-03'")}
    assert set(log) == set(cands)
    p = {u: log[u]["probability"] for u in cands}
    assert sum(p.values()) == pytest.approx(1.0)
    assert p["https://a.example/hard"] > p["https://a.example/flat"] > 0
    assert p["https://a.example/new"] == pytest.approx(p["https://a.example/hard"])  # untried: optimistic
    assert [u for u in cands if log[u]["chosen"]] == chosen and len(chosen) == 1
    counts = {u: 0 for u in cands}
    rng = np.random.default_rng(1)
    for _ in range(400):
        counts[pick_articles(db, "r", "2026-11-04", cands, 1, 0.1, 7, rng)[0]] += 1
    assert min(counts.values()) > 0
    assert counts["https://a.example/hard"] > counts["https://a.example/flat"]
    assert json.loads(json.dumps(chosen))  # plain strings
