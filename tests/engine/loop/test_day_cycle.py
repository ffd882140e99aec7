"""The engine's daily cycle (varro.engine.loop.cycle.step) on the toy application, with the tiny model: no real
application is registered or imported (tests/support/toy_app.py)."""

import hashlib
import json

import numpy as np
import pytest

from support.helpers import tiny_config
from support.toy import toy_reward
from support.toy_app import TOY_DAYS, target_words, use_toy_app
from varro.engine import store
from varro.engine.embed.embedders import HashEmbedder
from varro.engine.eval.metrics import app_day_metrics
from varro.engine.loop import cycle
from varro.engine.run.checkpoints import is_complete, list_checkpoints, verify_checkpoint

RUN = "r"
# Words the untrained tiny model writes often (single letters of its byte-level pieces, short merges), so
# the toy reward varies within a group and the day trains; TOY_TARGET's words it almost never writes.
COMMON_PIECES = ",".join([*"abcdefghijklmnopqrstuvwxyz", "it", "the", "will", "ex", "ab", "re", "go", "by"])


@pytest.fixture
def toy(monkeypatch, tiny_model_path, tmp_path):
    """(app, db, cfg, run_path): the toy registered alone, a fresh database and a fast day's settings."""
    app = use_toy_app(monkeypatch)
    cfg = tiny_config(tiny_model_path)
    cfg.sampling.group_size = 4
    cfg.sampling.max_tokens = 8
    cfg.train.minibatches = 2
    cfg.toy.target = COMMON_PIECES
    return app, store.open_db(tmp_path / "v.db"), cfg, tmp_path / "runs" / RUN


def run_day(toy, day):
    app, db, cfg, run_path = toy
    return cycle.step(app, db, cfg, RUN, run_path, day, HashEmbedder())


def split_ids(db, day, split):
    return store.prompt_ids(db, "toy", day, split=split)


def folder_digest(path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


def test_a_day_samples_scores_trains_then_checkpoints_and_records_its_stages_in_order(toy):
    app, db, cfg, run_path = toy
    day = TOY_DAYS[0]
    res = run_day(toy, day)
    # 4 prompts a day (1 held out) of 4 completions each, all scored at once (reward_delay_days 0)
    assert (res.ingested, res.sampled, res.scored, res.checkpoint, res.skipped) == (6, 16, 16, day, False)
    assert res.trained and res.steps == cfg.train.minibatches
    assert [p.name for p in list_checkpoints(run_path)] == [day] and is_complete(run_path, day)
    meta = verify_checkpoint(list_checkpoints(run_path)[0])
    assert (meta["app"], meta["run"], meta["trained_on"], meta["steps"]) == ("toy", RUN, day, res.steps)
    stages = [r[0] for r in db.execute("select stage from stages where run = ? and day = ? order by rowid",
                                       [RUN, day])]
    assert stages == ["sample", "score", "voice"]  # training's record is its checkpoint
    assert [r[0] for r in db.execute("select day from steps order by step")] == [day] * res.steps
    # the day's own completions were sampled before it trained: by the base model
    assert {r[0] for r in db.execute("select checkpoint from rollouts")} == {"base"}
    # the voice stage measured every completion of the day
    assert db.execute("select completions from voice_days where run = ? and day = ?", [RUN, day]).fetchone()[0] == 16


def test_running_a_finished_day_again_does_no_work_twice(toy):
    app, db, cfg, run_path = toy
    day = TOY_DAYS[0]
    first = run_day(toy, day)
    assert first.steps > 0
    tables = ("rollouts", "steps", "stages", "prompts", "toy_items")
    counts = {t: db[t].count for t in tables}
    digest = folder_digest(list_checkpoints(run_path)[0])
    again = run_day(toy, day)
    assert (again.ingested, again.sampled, again.scored, again.steps, again.trained) == (0, 0, 0, 0, False)
    assert again.checkpoint == day and again.resumed is None
    assert {t: db[t].count for t in tables} == counts
    assert folder_digest(list_checkpoints(run_path)[0]) == digest


def test_held_out_prompts_are_sampled_and_scored_but_never_trained_on(toy, monkeypatch):
    app, db, cfg, run_path = toy
    trained: dict[str, set[str]] = {}
    real = cycle.guarded_training

    def spy(db_, app_name, run, day, policy, groups, *args, **kwargs):
        trained[day] = {g[0].prompt_id for g in groups}
        return real(db_, app_name, run, day, policy, groups, *args, **kwargs)

    monkeypatch.setattr(cycle, "guarded_training", spy)
    for day in TOY_DAYS[:2]:
        run_day(toy, day)
    for day in TOY_DAYS[:2]:
        held = split_ids(db, day, "eval")
        # toy-3 is the one story in eval_every = 3 the engine's split holds out, every day
        assert held == {f"toy:{day}:toy-3"}
        assert trained[day] == split_ids(db, day, "train") and len(trained[day]) == 3
        assert not trained[day] & held
        assert db.execute("select count(*) from rollouts where prompt_id = ? and reward is not null",
                          [next(iter(held))]).fetchone()[0] == 4
        assert {r[0] for r in db.execute("select groups from steps where day = ?", [day])} == {3}
    # day 2 was sampled by checkpoint day 1, which trained on day 1's training groups only
    assert {r[0] for r in db.execute("select checkpoint from rollouts where day = ?", [TOY_DAYS[1]])} == {TOY_DAYS[0]}


def test_stored_rewards_are_the_toy_reward_of_their_texts(toy):
    app, db, cfg, run_path = toy
    day = TOY_DAYS[0]
    run_day(toy, day)
    target = target_words(cfg)
    rows = list(db.query("select r.prompt_id, r.completion, r.reward, r.advantage, r.components_json, p.split "
                         "from rollouts r join prompts p on p.id = r.prompt_id where r.day = ? order by r.id", [day]))
    assert len(rows) == 16
    expected = [toy_reward(r["completion"], target) for r in rows]
    assert [r["reward"] for r in rows] == expected
    assert len(set(expected)) > 1  # a check that could fail: the rewards are not all one value
    assert [json.loads(r["components_json"])["target_words"] for r in rows] == expected
    # each group's advantages are its rewards standardised within the group (independent numpy reference)
    for pid in {r["prompt_id"] for r in rows}:
        rew = np.array([r["reward"] for r in rows if r["prompt_id"] == pid])
        adv = np.array([r["advantage"] for r in rows if r["prompt_id"] == pid])
        want = (rew - rew.mean()) / rew.std() if rew.std() > cfg.train.flat_std else np.zeros_like(rew)
        np.testing.assert_allclose(adv, want, atol=1e-5)
    m = app_day_metrics(db, app, RUN, day)
    assert m["reward_mean"] == pytest.approx(np.mean([e for e, r in zip(expected, rows) if r["split"] == "train"]))
    assert m["eval_reward"] == pytest.approx(np.mean([e for e, r in zip(expected, rows) if r["split"] == "eval"]))
    assert m["target_words"] == pytest.approx(np.mean(expected))
