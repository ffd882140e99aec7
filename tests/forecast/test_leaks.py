"""No story on both sides: the guard band around the held-out split, on the shipped sample with MiniLM.

Regression: on a fresh demo the panel held "Archaeologists in Valdoria uncover 2,000-year-old shipwreck"
while "Archaeologists raise first sealed amphora from 2,000-year-old Valdorian shipwreck" was trained on
(cosine 0.67, a development that fell outside the 3-day story window), and Walter's panel held a
Calderra strike article at 0.549 from a trained one (just under the 0.55 link).
"""

import json

import numpy as np
import pytest

from varro.engine import store as dbm
from varro.engine.core.config import Config
from varro.forecast.task import choose_prompts, headline_stories, headline_text, story_split
from support.helpers import varro_sample_days as sample_days
from varro.engine.embed.embedders import CachedEmbedder, load_embedder
from varro.forecast.headlines import headlines_for_day
from varro.forecast.sample import load_sample_day
from varro.engine.eval.panel import panel_prompts, prompt_text
from varro.engine.prompts.split import too_close


def test_too_close_is_a_max_cosine_threshold():
    a = np.eye(3, dtype=np.float32)
    held = np.array([[0.6, 0.8, 0.0]], dtype=np.float32)
    assert too_close(a, held, 0.5).tolist() == [True, True, False]
    assert too_close(a, held, 0.7).tolist() == [False, True, False]
    assert too_close(a, held[:0], 0.5).tolist() == [False, False, False]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    db = dbm.open_db(tmp_path_factory.mktemp("leaks") / "v.db")
    emb = CachedEmbedder(load_embedder("all-MiniLM-L6-v2"), db)
    cfg = Config()
    cfg.varro.prompts_per_day, cfg.varro.eval_every = 16, 4  # the demo's recipe
    for d in sample_days():
        load_sample_day(db, d)
        choose_prompts(db, d, emb, cfg)
    return db, emb, cfg


def test_no_training_prompt_is_close_to_a_held_out_headline(sample):
    db, emb, cfg = sample
    worst = 0.0
    for d in sample_days():
        stories = headline_stories(db, d, emb, cfg)
        window = [h for h in (headlines_for_day(db, x) for x in sample_days() if x <= d) for h in h]
        held = [headline_text(h) for h in window if h["id"] in stories and story_split(stories[h["id"]], cfg) == "eval"]
        train = [prompt_text(p) for p in db.query("select * from prompts where day = ? and split = 'train'", [d])]
        if held and train:
            worst = max(worst, float((emb.encode(train) @ emb.encode(held).T).max()))
    assert 0.3 < worst < cfg.eval.leak_cosine


def test_the_panel_holds_no_prompt_close_to_a_training_prompt(sample):
    db, emb, cfg = sample
    prompts = panel_prompts(db, "varro", "r", 32, lambda p: p["day"] < sample_days()[-1], emb, cfg.eval.leak_cosine)
    assert len(prompts) >= 8
    train = emb.encode([prompt_text(p) for p in db.query("select * from prompts where split = 'train'")])
    near = (emb.encode([prompt_text(p) for p in prompts]) @ train.T).max(axis=1)
    assert near.max() < cfg.eval.leak_cosine
    stories = [json.loads(p["source_json"])["story_id"] for p in prompts]
    assert len(set(stories)) == len(stories)


def all_targets(db, emb, cfg, split):
    """The texts of every next-day headline that scores some prompt of `split` on the sample."""
    from varro.forecast.task import forecast_targets

    out = []
    for p in db.query("select * from prompts where app = 'varro' and split = ? and day < ?", [split, sample_days()[-1]]):
        out += [headline_text(h) for h in forecast_targets(db, p, emb, cfg)[0]]
    return out


def test_no_held_out_target_is_near_a_training_target_or_prompt(sample):
    """A forecast on the held-out side is never scored on a headline training rewards, or on one within the
    guard band of it or of a training prompt (and the other way round)."""
    db, emb, cfg = sample
    held, trained = all_targets(db, emb, cfg, "eval"), all_targets(db, emb, cfg, "train")
    assert len(held) >= 5 and len(trained) >= 20
    train_prompts = [prompt_text(p) for p in db.query("select * from prompts where split = 'train'")]
    held_v = emb.encode(held)
    assert float((held_v @ emb.encode(trained).T).max()) < cfg.eval.leak_cosine
    assert float((held_v @ emb.encode(train_prompts).T).max()) < cfg.eval.leak_cosine


def test_a_held_out_prompt_whose_story_stalls_is_not_scored_on_a_trained_story(sample):
    """The demo's case: held-out "Aldervik stock index slips 0.6%" (2026-11-03) had no next-day headline of
    its own story and fell back on "Tessaline sell-off drags Aldervik tech index down 3.2%", the own-story
    target of training prompts."""
    from varro.forecast.task import forecast_targets

    db, emb, cfg = sample
    h = next(h for h in headlines_for_day(db, "2026-11-03") if h["title"].startswith("Aldervik stock index slips"))
    story = headline_stories(db, "2026-11-03", emb, cfg)[h["id"]]
    prompt = {"id": "varro:2026-11-03:aldervik", "day": "2026-11-03", "split": "eval",
              "source_json": json.dumps({"title": h["title"], "summary": h["summary"], "story_id": story})}
    targets, fallback = forecast_targets(db, prompt, emb, cfg)
    assert fallback and not any("Tessaline" in t["title"] for t in targets)
    nxt = headline_stories(db, "2026-11-04", emb, cfg)
    assert all(story_split(nxt[t["id"]], cfg) == "eval" for t in targets)
