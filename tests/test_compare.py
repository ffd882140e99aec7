"""Before/after comparison: same prompts, same seed, same reward; a paired bootstrap CI."""

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import tiny_config
from varro import db as dbm
from varro.compare import CompareError, bootstrap_ci, compare, default_prompts
from varro.config import db_path, run_dir
from varro.cycle import score_texts, step
from varro.embed import HashEmbedder


@pytest.fixture
def trained(tiny_model_path, varro_home):
    db = dbm.open_db(db_path())
    cfg = tiny_config(tiny_model_path, learning_rate=2e-2)
    cfg.sampling.max_tokens = 12
    cfg.varro.prompts_per_day = 4
    cfg.varro.eval_every = 4
    for d in ["2026-11-02", "2026-11-03", "2026-11-04"]:
        step(db, cfg, "r", run_dir("r"), d, HashEmbedder())
    return db, cfg


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_agreement():
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.2, 0.1, size=(40, 4))
    lo, hi = bootstrap_ci(diffs, seed=1)
    assert lo < diffs.mean() < hi
    assert hi - lo < 0.1
    # the CI is of the mean over prompts: resampling prompts, with a textbook-normal check
    se = diffs.mean(axis=1).std(ddof=1) / np.sqrt(40)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert bootstrap_ci(np.zeros((5, 3)), seed=0) == (0.0, 0.0)


def test_same_checkpoint_on_both_sides_gives_identical_samples(trained):
    db, cfg = trained
    prompts = default_prompts(db, "varro", 3, lambda d: d < "2026-11-04")
    assert prompts[0]["split"] == "eval" and prompts[0]["day"] == "2026-11-03"
    c = compare(db, run_dir("r"), prompts, "2026-11-03", "2026-11-03", score_texts, HashEmbedder(), cfg,
                samples=2, seed=5)
    assert c.before.texts == c.after.texts
    assert c.mean_diff == 0.0 and c.ci == (0.0, 0.0)


def test_base_and_trained_differ_and_rewards_match_the_scorer(trained):
    db, cfg = trained
    prompts = default_prompts(db, "varro", 3, lambda d: d < "2026-11-04")
    c = compare(db, run_dir("r"), prompts, "base", "latest", score_texts, HashEmbedder(), cfg, samples=2, seed=5)
    assert c.after.label == "2026-11-04"
    assert c.before.texts != c.after.texts
    want = [[x["reward"] for x in score_texts(db, p, t, HashEmbedder(), cfg)]
            for p, t in zip(prompts, c.after.texts)]
    np.testing.assert_allclose(c.after.rewards, want)
    assert c.mean_diff == pytest.approx(float((c.after.rewards - c.before.rewards).mean()))
    with pytest.raises(CompareError, match="no checkpoint 2026-12-01"):
        compare(db, run_dir("r"), prompts, "base", "2026-12-01", score_texts, HashEmbedder(), cfg)


def test_compare_cli_prints_and_writes_html(trained, tmp_path):
    from varro.cli import cli

    out = CliRunner().invoke(cli, ["compare", "--run", "r", "--n", "2", "--samples", "2", "--embedder", "hash",
                                   "--html", str(tmp_path / "c.html")])
    assert out.exit_code == 0, out.output
    assert "95% bootstrap CI" in out.output and "mean reward base" in out.output
    page = (tmp_path / "c.html").read_text()
    assert page.startswith("<!doctype html>") and "bootstrap CI" in page
    bad = CliRunner().invoke(cli, ["compare", "--run", "nope", "--embedder", "hash"])
    assert bad.exit_code == 1 and "no checkpoint" in bad.output
