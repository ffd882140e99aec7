"""Walter's daily cycle over the shipped Bluesky sample, on the tiny model."""

import json

import numpy as np
import pytest

from support.helpers import tiny_config
from varro.engine import store as dbm
from varro.engine.run.checkpoints import list_checkpoints
from varro.engine.embed.embedders import CachedEmbedder, HashEmbedder
from support.helpers import walter_day_metrics as day_metrics, walter_step as step
from varro.engine.prompts.split import is_held_out
from walter.task import article_history, candidate_articles
from walter.sample import ingest_sample_day, sample_days


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory):
    db = dbm.open_db(tmp_path_factory.mktemp("w") / "v.db")
    for d in sample_days():
        ingest_sample_day(db, d)
    return db


def test_sample_goes_through_the_real_ingest(sample_db):
    db = sample_db
    assert sample_days() == ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05", "2026-11-06"]
    assert db["bsky_posts"].count == 297
    assert db.execute("select count(distinct url_norm) from bsky_posts").fetchone()[0] == 36
    assert db.execute("select count(*) from bsky_posts where deleted = 1").fetchone()[0] == 2
    # counts are final for every day but the last (read 24 h later); the last day's are not yet
    final = dict(db.execute("select day, min(counts_final) from bsky_posts where deleted = 0 group by day"))
    assert final == {"2026-11-02": 1, "2026-11-03": 1, "2026-11-04": 1, "2026-11-05": 1, "2026-11-06": 0}
    assert db.execute("select count(*) from bsky_posts where quote_count is null").fetchone()[0] >= 1
    assert db["bsky_authors"].count == 60
    before = (db["bsky_posts"].count, db["bsky_authors"].count)
    ingest_sample_day(db, "2026-11-04")
    assert (db["bsky_posts"].count, db["bsky_authors"].count) == before


def test_baseline_weights_favour_posts_that_beat_their_authors_usual(sample_db):
    from varro.engine.core.config import Config
    from walter.task import count_weights
    from walter.ingest import baseline_stats
    from walter.reward import engagement

    cfg = Config()
    top_by_likes_teaches, articles = 0, 0
    for url in [r[0] for r in sample_db.execute("select distinct url_norm from bsky_posts")]:
        h = article_history(sample_db, url, cfg)
        assert np.all((h.weights >= 0) & (h.weights <= 1))
        likes = []
        for uri, w in zip(h.uris, h.weights):
            row = sample_db.execute("select author_did, like_count, repost_count, reply_count, quote_count, "
                                    "counts_age_hours from bsky_posts where uri = ?", [uri]).fetchone()
            e = engagement(*row[1:5], cfg.walter)
            b = baseline_stats(sample_db, row[0], uri, count_weights(cfg), row[5], cfg.walter.engagement_half_life_hours)
            assert (w == 0.0) == (e <= b.usual)  # at or below the author's usual: weight 0
            likes.append(row[1])
        if not likes:
            continue  # the last day's posts have no final counts yet
        articles += 1
        top_by_likes_teaches += int(np.argmax(likes) == np.argmax(h.weights))
    # big accounts' ordinary posts collect the most likes but mostly do not teach
    assert articles >= 28
    assert top_by_likes_teaches < articles / 2


def test_full_walter_cycle_over_the_sample(tiny_model_path, tmp_path):
    db = dbm.open_db(tmp_path / "v.db")
    cfg = tiny_config(tiny_model_path, learning_rate=2e-3)
    cfg.sampling.max_tokens = 16
    cfg.walter.articles_per_day = 4
    cfg.walter.eval_every = 4
    run_path = tmp_path / "runs" / "w"
    emb = CachedEmbedder(HashEmbedder(), db)
    days = sample_days()
    results = [step(db, cfg, "w", run_path, d, emb, ingest_sample_day) for d in days]
    assert [p.name for p in list_checkpoints(run_path)] == days
    assert results[0].sampled == 0 and "empty day" in results[0].notes[0]
    assert all(r.sampled == 4 * 8 and r.steps > 0 for r in results[1:])
    prompts = list(db.query("select * from prompts where app = 'walter'"))
    stories = {r["item_id"]: r["story_id"] for r in db.query("select * from stories where app = 'walter'")}
    sides: dict[str, set] = {}
    for p in prompts:  # split by story: an article is held out exactly when its story is
        src = json.loads(p["source_json"])
        assert src["story_id"] == stories[src["url_norm"]]
        assert (p["split"] == "eval") == is_held_out(src["story_id"], 4)
        sides.setdefault(src["story_id"], set()).add(p["split"])
    assert all(len(s) == 1 for s in sides.values())
    assert any(p["split"] == "eval" for p in prompts)
    chosen = db.execute("select count(*) from curriculum where chosen = 1").fetchone()[0]
    assert chosen == sum(p["split"] == "train" for p in prompts)
    # the voice: every post's cadence, and the winners it is rewarded against, under the base model
    assert db.execute("select count(*) from cadence").fetchone()[0] == db["rollouts"].count
    assert db.execute("select count(*) from human_cadence where app = 'walter'").fetchone()[0] > 0
    m = day_metrics(db, "w", days[2])
    comps = [json.loads(r[0]) for r in db.execute(
        "select components_json from rollouts where day = ?", [days[2]])]
    assert m["copy_rate"] == pytest.approx(np.mean([c["copy"] for c in comps]))
    assert m["kl"] is not None
    for key in ["transfer", "teacher_weight", "copy", "pen_hashtags", "pen_too_long", "graphemes"]:
        assert key in comps[0]
    counts = (db["rollouts"].count, db["steps"].count, db["curriculum"].count)
    again = step(db, cfg, "w", run_path, days[3], emb, ingest_sample_day)
    assert (again.sampled, again.steps) == (0, 0)
    assert (db["rollouts"].count, db["steps"].count, db["curriculum"].count) == counts


def test_candidates_need_a_winner_and_a_card(sample_db):
    from varro.engine.core.config import Config

    cands = candidate_articles(sample_db, "2026-11-04", Config())
    assert cands
    for h in cands:
        assert h.title and h.weights.max() > 0


def test_walter_cli_demo_and_help(varro_home):
    from click.testing import CliRunner

    from walter.cli import cli

    runner = CliRunner()
    out = runner.invoke(cli, ["demo", "--days", "2", "--tiny", "--cold", "--embedder", "hash", "--max-tokens", "8",
                              "--articles-per-day", "2"])
    assert out.exit_code == 0, out.output
    assert "2026-11-03: ingested 61, sampled 16" in out.output
    for name in cli.commands:
        help_out = runner.invoke(cli, [name, "--help"])
        assert help_out.exit_code == 0 and "Example:" in help_out.output, name
    missing = runner.invoke(cli, ["step", "--date", "2026-11-03", "--source", "bluesky", "--embedder", "hash"],
                            env={"BSKY_HANDLE": "", "BSKY_APP_PASSWORD": ""})
    assert missing.exit_code == 1
    assert "BSKY_HANDLE" in missing.output
