"""Before/after and the learning curve on the held-out panel: same prompts, same seeds, same reward."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from support.helpers import building_home, copy_home, tiny_config
from varro.engine import store as dbm
from varro.engine.eval.compare import compare, held_out_prompts
from varro.engine.eval.intervals import mean_ci
from varro.engine.run.checkpoints import CheckpointError
from varro.engine.core.paths import db_path
from varro.engine.core.paths import run_dir
from support.helpers import varro_step as step
from varro.forecast.task import score_texts
from varro.engine.embed.embedders import HashEmbedder
from varro.engine.eval.panel import ensure_scores, evaluate, panel_prompts, read_scores

DAYS = ["2026-11-02", "2026-11-03", "2026-11-04"]


def scorable(db):
    from datetime import date, timedelta

    from varro.forecast.headlines import headlines_for_day

    return lambda p: bool(headlines_for_day(db, (date.fromisoformat(p["day"]) + timedelta(days=1)).isoformat()))


def trained_config(model_path):
    cfg = tiny_config(model_path, learning_rate=2e-2)
    cfg.sampling.max_tokens = 12
    cfg.varro.prompts_per_day = 8
    cfg.varro.eval_every = 4
    cfg.eval.panel_samples = 2
    return cfg


@pytest.fixture(scope="module")
def trained_home(tiny_model_path, tmp_path_factory):
    """Run "r" trained over DAYS, built once for the module (training is seeded, so every test's copy is what
    training it afresh would give)."""
    with building_home(tmp_path_factory.mktemp("compare") / "home") as home:
        db = dbm.open_db(db_path(home))
        cfg = trained_config(tiny_model_path)
        for d in DAYS:
            step(db, cfg, "r", run_dir("r", home), d, HashEmbedder())
        db.conn.close()
    return home


@pytest.fixture
def trained(trained_home, tiny_model_path, varro_home):
    """The trained run, copied into this test's own home: the tests write panel scores and compares."""
    copy_home(trained_home, varro_home)
    return dbm.open_db(db_path()), trained_config(tiny_model_path)


def test_mean_ci_brackets_the_mean_and_shrinks_with_agreement():
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.2, 0.1, size=(40, 4))
    lo, hi = mean_ci(diffs)
    assert lo < diffs.mean() < hi
    assert hi - lo < 0.1
    # the CI is of the mean over prompts: half as spread prompts, half as wide an interval
    lo2, hi2 = mean_ci(0.2 + (diffs - 0.2) / 2)
    assert (hi2 - lo2) == pytest.approx((hi - lo) / 2)
    assert mean_ci(np.zeros((5, 3))) == (0.0, 0.0)


def test_compare_prompts_are_held_out_stories_never_trained_on(trained):
    """Regression: compare used to top the eval prompts up with the latest day's training prompts,
    which the latest checkpoint had just been trained on."""
    db, cfg = trained
    prompts, note = held_out_prompts(db, "varro", run_dir("r"), 50, scorable(db), cfg)
    assert prompts and all(p["split"] == "eval" for p in prompts)
    assert "only" in note and "no training prompt" in note
    trained_stories = {json.loads(p["source_json"])["story_id"]
                       for p in db.query("select * from prompts where app = 'varro' and split = 'train'")}
    stories = [json.loads(p["source_json"])["story_id"] for p in prompts]
    assert len(set(stories)) == len(stories)  # one prompt per story
    assert not set(stories) & trained_stories
    assert all(p["day"] < DAYS[-1] for p in prompts)  # its targets (the next day's headlines) exist


def test_training_prompts_are_never_rewarded_against_a_held_out_story(trained):
    db, cfg = trained
    from varro.engine.core.dates import shift
    from varro.forecast.task import forecast_targets, headline_stories, story_split

    checked = 0
    for p in db.query("select * from prompts where app = 'varro' and split = 'train' and day < ?", [DAYS[-1]]):
        stories = headline_stories(db, shift(p["day"], 1), HashEmbedder(), cfg)
        targets, _ = forecast_targets(db, p, HashEmbedder(), cfg)
        assert all(story_split(stories[h["id"]], cfg) == "train" for h in targets)
        checked += 1
    assert checked >= 8
    # and a held-out headline's exact words earn a training prompt nothing: it is never a target
    day = DAYS[0]
    stories = headline_stories(db, DAYS[1], HashEmbedder(), cfg)
    from varro.forecast.headlines import headlines_for_day

    held = [h["title"] for h in headlines_for_day(db, DAYS[1]) if story_split(stories[h["id"]], cfg) == "eval"]
    train_prompt = next(db.query("select * from prompts where app = 'varro' and day = ? and split = 'train'", [day]))
    got = score_texts(db, train_prompt, held[:1], HashEmbedder(), cfg)[0]
    assert got["semantic"] is None or got["semantic"] < 0.9


def test_same_checkpoint_on_both_sides_gives_identical_samples(trained):
    db, cfg = trained
    prompts, _ = held_out_prompts(db, "varro", run_dir("r"), 3, scorable(db), cfg)
    c = compare(db, run_dir("r"), prompts, "2026-11-03", "2026-11-03", score_texts, HashEmbedder(), cfg,
                samples=2, seed=5)
    assert c.before.texts == c.after.texts
    assert c.mean_diff == 0.0 and c.ci == (0.0, 0.0)


def test_base_and_trained_differ_and_rewards_match_the_scorer(trained):
    db, cfg = trained
    prompts, _ = held_out_prompts(db, "varro", run_dir("r"), 3, scorable(db), cfg)
    c = compare(db, run_dir("r"), prompts, "base", "latest", score_texts, HashEmbedder(), cfg, samples=2, seed=5)
    assert c.after.label == "2026-11-04"
    assert c.before.texts != c.after.texts
    want = [[x["reward"] for x in score_texts(db, p, t, HashEmbedder(), cfg)]
            for p, t in zip(prompts, c.after.texts)]
    np.testing.assert_allclose(c.after.rewards, want)
    assert c.mean_diff == pytest.approx(float((c.after.rewards - c.before.rewards).mean()))
    with pytest.raises(CheckpointError, match="no checkpoint 2026-12-01"):
        compare(db, run_dir("r"), prompts, "base", "2026-12-01", score_texts, HashEmbedder(), cfg)


def test_panel_scores_the_same_prompts_for_every_checkpoint_once(trained):
    db, cfg = trained
    prompts, points = evaluate(db, "varro", run_dir("r"), score_texts, HashEmbedder(), cfg, scorable(db))
    assert [p.label for p in points] == ["base", *DAYS]
    assert all(p.prompts == len(prompts) for p in points)
    rows = db.execute("select checkpoint, group_concat(prompt_id) from (select distinct checkpoint, prompt_id "
                      "from panel_scores where run = 'r' order by prompt_id) group by checkpoint").fetchall()
    assert len(rows) == 4 and len({r[1] for r in rows}) == 1  # every checkpoint: the same prompts
    assert points[0].diff == 0.0
    count = db.execute("select count(*) from panel_scores").fetchone()[0]
    assert count == 4 * len(prompts) * cfg.eval.panel_samples
    # a re-run computes nothing: no cell is missing
    assert ensure_scores(db, run_dir("r"), "2026-11-03", prompts, score_texts, HashEmbedder(), cfg,
                         cfg.eval.panel_samples, cfg.eval.panel_seed) == 0
    again_prompts, again = evaluate(db, "varro", run_dir("r"), score_texts, HashEmbedder(), cfg, scorable(db))
    assert again_prompts == prompts and [p.mean for p in again] == [p.mean for p in points]
    # the same seeds: a recomputed checkpoint draws exactly the same completions
    before = read_scores(db, "r", "base", prompts, cfg.eval.panel_samples, cfg.eval.panel_seed)
    db.execute("delete from panel_scores where checkpoint = 'base'")
    ensure_scores(db, run_dir("r"), "base", prompts[::-1], score_texts, HashEmbedder(), cfg,
                  cfg.eval.panel_samples, cfg.eval.panel_seed)
    assert read_scores(db, "r", "base", prompts, cfg.eval.panel_samples, cfg.eval.panel_seed).texts == before.texts


def test_the_panel_is_fixed_once_chosen(trained):
    db, cfg = trained
    first = panel_prompts(db, "varro", "r", 2, scorable(db))
    assert panel_prompts(db, "varro", "r", 2, lambda p: True) == first
    grown = panel_prompts(db, "varro", "r", 50, scorable(db))
    assert grown[:2] == first  # topped up, never reordered


def test_compare_and_eval_cli(trained, tmp_path):
    from varro.cli import cli

    out = CliRunner().invoke(cli, ["compare", "--run", "r", "--n", "2", "--samples", "2", "--embedder", "hash",
                                   "--html", str(tmp_path / "c.html")])
    assert out.exit_code == 0, out.output
    assert "95% CI" in out.output and "mean reward base" in out.output
    assert "panel of 2 prompts: under 10, too small to conclude from" in out.output
    assert "held-out prompts" in out.output and "scored against headlines of 2026-11-0" in out.output
    page = (tmp_path / "c.html").read_text()
    assert page.startswith("<!doctype html>") and "95% CI" in page
    js = CliRunner().invoke(cli, ["compare", "--run", "r", "--n", "2", "--samples", "2", "--embedder", "hash",
                                  "--json"])
    assert js.exit_code == 0, js.output
    data = json.loads(js.output)
    assert all(p["split"] == "eval" and p["day"] and len(p["before"]) == 2 and len(p["after"]) == 2
               for p in data["prompts"])
    assert data["prompts"][0]["targets"].startswith("headlines of 2026-11-0")
    ev = CliRunner().invoke(cli, ["eval", "--run", "r", "--embedder", "hash"])
    assert ev.exit_code == 0, ev.output
    assert "held-out prompts" in ev.output and "2026-11-04" in ev.output and "base" in ev.output
    bad = CliRunner().invoke(cli, ["compare", "--run", "nope", "--embedder", "hash"])
    assert bad.exit_code == 1 and "no checkpoint" in bad.output


def test_text_compare_shows_whole_texts_side_by_side_with_a_header():
    """The text a person reads in the morning: both checkpoints named, every sample whole (wrapped, never cut
    with an ellipsis), each under its reward."""
    from varro.engine.eval.compare import Comparison, format_comparison
    from varro.engine.eval.panel import Cells

    long_before = " ".join(f"before{i}" for i in range(40))
    after = "Talks resume on Monday; a deal is expected by Friday."
    c = Comparison(prompts=[{"id": "p1", "text": "Headline: Port strike\nSummary: ..."}],
                   before=Cells("base", [[long_before]], np.array([[0.125]])),
                   after=Cells("2026-11-08", [[after]], np.array([[0.5]])), mean_diff=0.375, ci=(0.375, 0.375))
    out = format_comparison(c, width=40)
    lines = out.splitlines()
    assert lines[0].startswith("before: base") and lines[0].endswith("after: 2026-11-08")
    assert "== p1  Headline: Port strike" in out and "…" not in out
    body = [line.split("|") for line in lines[3:] if "|" in line]
    left = " ".join(cells[0].strip() for cells in body)
    assert long_before in left and "reward +0.125" in left
    right = " ".join(cells[1].strip() for cells in body)
    assert after in right and "reward +0.500" in right
    assert all(len(cells[0]) <= 41 for cells in body)
