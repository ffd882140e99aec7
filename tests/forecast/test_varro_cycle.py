"""Varro's daily cycle over the shipped sample days, on the tiny model with the real MiniLM."""

import json

import numpy as np
import pytest

from support.helpers import tiny_config
from varro.engine import store as dbm
from varro.engine.run.checkpoints import list_checkpoints
from support.helpers import varro_day_metrics as day_metrics, varro_step as step
from varro.forecast.task import choose_prompts
from support.helpers import varro_sample_days as sample_days
from varro.engine.embed.embedders import CachedEmbedder, HashEmbedder, SentenceEmbedder
from varro.forecast.headlines import headlines_for_day
from varro.forecast.sample import load_sample_day


@pytest.fixture(scope="module")
def minilm():
    return SentenceEmbedder()


def cycle_config(model_path):
    cfg = tiny_config(model_path, learning_rate=2e-3)
    cfg.sampling.max_tokens = 16
    cfg.varro.prompts_per_day = 4
    cfg.varro.eval_every = 4
    # the eval guard reads one day's mean over that day's one held-out prompt, which for the tiny model's word
    # salad moves by more than 0.2 from day to day (issue 27); these tests are about the cycle, not the guard
    cfg.train.eval_drop_max = 10.0
    return cfg


def test_embedding_cache_embeds_each_text_once(tmp_path):
    db = dbm.open_db(tmp_path / "v.db")
    emb = CachedEmbedder(HashEmbedder(), db)
    a = emb.encode(["port strike", "rate hike", "port strike"])
    assert (emb.hits, emb.misses) == (0, 2) or (emb.hits, emb.misses) == (1, 2)
    b = emb.encode(["rate hike", "port strike"])
    np.testing.assert_array_equal(b, a[[1, 0]])
    assert db["embeddings"].count == 2
    np.testing.assert_allclose(a, HashEmbedder().encode(["port strike", "rate hike", "port strike"]), atol=1e-7)


def test_prompts_are_diverse_stable_and_hold_out_eval(tmp_path, minilm):
    db = dbm.open_db(tmp_path / "v.db")
    day = "2026-11-02"
    assert load_sample_day(db, day) == 40
    assert load_sample_day(db, day) == 0
    cfg = cycle_config("unused")
    cfg.varro.prompts_per_day = 40
    cfg.varro.eval_every = 8
    prompts = choose_prompts(db, day, minilm, cfg)
    titles = [json.loads(p["source_json"])["title"] for p in prompts]
    vecs = minilm.encode(titles)
    sims = vecs @ vecs.T - np.eye(len(titles)) * 2
    assert sims.max() < 0.8
    assert len(prompts) < 40  # the sample carries the same story from two outlets on every day
    # split by story: a prompt is held out exactly when its story is, and no story is on both sides
    from varro.engine.prompts.split import is_held_out

    stories = {p["id"]: json.loads(p["source_json"])["story_id"] for p in prompts}
    assert all((p["split"] == "eval") == is_held_out(stories[p["id"]], 8) for p in prompts)
    sides: dict[str, set] = {}
    for p in prompts:
        sides.setdefault(stories[p["id"]], set()).add(p["split"])
    assert all(len(s) == 1 for s in sides.values())
    assert 0 < sum(p["split"] == "eval" for p in prompts) < len(prompts)
    stored = {r["item_id"]: r["story_id"] for r in db.query("select * from stories where app = 'varro'")}
    assert len(stored) == 40 and len(set(stored.values())) < 40  # the same story from two outlets is linked
    assert choose_prompts(db, day, minilm, cfg) == prompts


def test_full_cycle_over_the_sample_days(tiny_model_path, tmp_path, minilm):
    db = dbm.open_db(tmp_path / "v.db")
    cfg = cycle_config(tiny_model_path)
    run_path = tmp_path / "runs" / "r"
    emb = CachedEmbedder(minilm, db)
    days = sample_days()
    assert len(days) == 7
    results = [step(db, cfg, "r", run_path, d, emb) for d in days]
    assert [p.name for p in list_checkpoints(run_path)] == days
    assert [r.scored for r in results] == [0] + [4 * 8] * 6
    assert [r.steps > 0 for r in results] == [False] + [True] * 6
    per_day = dict(db.execute("select day, count(*) from rollouts where reward is not null group by day").fetchall())
    assert per_day == {d: 32 for d in days[:-1]}
    # the forecasts of day D were sampled by checkpoint D
    assert db.execute("select count(*) from rollouts where checkpoint != day").fetchone()[0] == 0
    m = day_metrics(db, "r", days[0])
    rows = list(db.query("select r.reward, p.split from rollouts r join prompts p on p.id = r.prompt_id "
                         "where r.day = ?", [days[0]]))
    assert m["reward_mean"] == pytest.approx(np.mean([r["reward"] for r in rows if r["split"] == "train"]))
    assert m["eval_reward"] == pytest.approx(np.mean([r["reward"] for r in rows if r["split"] == "eval"]))
    assert m["kl"] is not None and m["clip_fraction"] is not None
    comps = json.loads(db.execute("select components_json from rollouts where day = ? limit 1",
                                  [days[0]]).fetchone()[0])
    for key in ["semantic", "format", "leak", "echo", "words", "beat_timeframe", "cosine_to_source"]:
        assert key in comps
    # Running a finished day again does no work twice.
    counts = (db["rollouts"].count, db["steps"].count, db["embeddings"].count)
    again = step(db, cfg, "r", run_path, days[2], emb)
    assert (again.scored, again.steps, again.sampled, again.ingested) == (0, 0, 0, 0)
    assert (db["rollouts"].count, db["steps"].count, db["embeddings"].count) == counts


def test_crash_after_checkpoint_resamples_without_training_again(tiny_model_path, tmp_path):
    db = dbm.open_db(tmp_path / "v.db")
    cfg = cycle_config(tiny_model_path)
    run_path = tmp_path / "runs" / "r"
    emb = HashEmbedder()
    step(db, cfg, "r", run_path, "2026-11-02", emb)
    first = step(db, cfg, "r", run_path, "2026-11-03", emb)
    texts = [r["completion"] for r in db.query("select completion from rollouts where day='2026-11-03' order by id")]
    # as if the process died after writing checkpoint 2026-11-03 but before sampling
    db.execute("delete from rollouts where day = '2026-11-03'")
    db.conn.commit()
    steps = db["steps"].count
    again = step(db, cfg, "r", run_path, "2026-11-03", emb)
    assert again.steps == 0 and again.sampled == first.sampled
    assert db["steps"].count == steps
    redo = [r["completion"] for r in db.query("select completion from rollouts where day='2026-11-03' order by id")]
    assert redo == texts  # same checkpoint, same seed: the same forecasts


def test_day_without_headlines_is_recorded_and_skipped(tiny_model_path, tmp_path):
    db = dbm.open_db(tmp_path / "v.db")
    cfg = cycle_config(tiny_model_path)
    run_path = tmp_path / "runs" / "r"
    emb = HashEmbedder()
    step(db, cfg, "r", run_path, "2026-11-02", emb)
    empty = step(db, cfg, "r", run_path, "2026-11-20", emb, ingest=lambda db, day: 0)
    assert headlines_for_day(db, "2026-11-20") == []
    assert empty.sampled == 0 and empty.scored == 0
    assert any("no headlines" in n for n in empty.notes)
    assert db.execute("select count(*) from rollouts where reward is null and day='2026-11-02'").fetchone()[0] == 32
