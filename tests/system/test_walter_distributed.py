"""Walter's nightly under `mlx.launch -n 2 --backend ring` on localhost against one process.

Walter scores a post at once (reward delay 0): one step samples the day's
prompts, scores them and trains on them. The two ranks sample their halves of
the prompts, each completion with its own key from the day's seed, its
prompt's id and its group index (varro.engine.sampling.rollouts.row_key), so a
two-rank day is a one-process day: the same rollouts token for token, and the
same checkpoint within the ATOL of tests/support/distributed.py (Varro's too).
The training and the scoring are also checked apart from the sampling: one
process, handed the rollouts the two ranks sampled with their rewards wiped,
scores them to the same rewards and writes the same checkpoint.
"""

import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from support.distributed import ATOL, LAUNCH, load, run  # load reads runs/d/checkpoints/2026-11-03

pytestmark = pytest.mark.slow

DAY = "2026-11-03"  # the sample's first day with scorable articles (2026-11-02's posts have their counts)
GROUP = 4


def nightly_args(model) -> list[str]:
    # 8 articles make 4 training groups: with 2 a wrong split of the rows across the ranks can look right
    return ["-m", "walter.cli", "nightly", "--run", "d", "--source", "sample", "--quiet", "--date", DAY,
            "--model", str(model), "--embedder", "hash", "--max-tokens", "10", "--articles-per-day", "8",
            "--eval-every", "4", "--lora-layers", "2", "--group-size", str(GROUP), "--learning-rate", "5e-3",
            "--kl-max", "1000", "--minibatches", "1"]


def copy_home(src: Path, tmp_path_factory, name: str) -> Path:
    home = tmp_path_factory.mktemp(name)
    shutil.copytree(src, home, dirs_exist_ok=True)
    return home


def ok(out) -> None:
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> Path:
    """A data folder holding the sample's 2026-11-02 (no model, no checkpoint)."""
    home = tmp_path_factory.mktemp("start")
    ok(run([sys.executable, "-m", "walter.cli", "ingest", "--date", "2026-11-02", "--source", "sample"], home))
    return home


@pytest.fixture(scope="module")
def pair(start, tiny_model_path, tmp_path_factory) -> Path:
    home = copy_home(start, tmp_path_factory, "pair")
    ok(run([str(LAUNCH), "-n", "2", "--backend", "ring", "--", sys.executable, *nightly_args(tiny_model_path)],
           home))
    return home


@pytest.fixture(scope="module")
def solo(pair, tiny_model_path, tmp_path_factory) -> Path:
    """One process re-running the day on the two ranks' rollouts, unscored and untrained."""
    home = copy_home(pair, tmp_path_factory, "solo")
    shutil.rmtree(home / "runs" / "d" / "checkpoints" / DAY)
    with sqlite3.connect(home / "data" / "varro.db") as db:
        db.execute("update rollouts set reward = null, components_json = null, advantage = null, "
                   "scored_utc = null where day = ?", [DAY])
    out = run([sys.executable, *nightly_args(tiny_model_path)], home)
    ok(out)
    assert f"{DAY}: done: ingested 0, sampled 0, scored {6 * GROUP}, steps 1" in \
        (home / "runs" / "d" / "logs" / f"{DAY}.log").read_text()  # nothing sampled again; all scored again
    return home


def rollouts(home: Path) -> list[tuple]:
    with sqlite3.connect(home / "data" / "varro.db") as db:
        return db.execute("select prompt_id, group_index, checkpoint, completion_token_ids_json, reward, "
                          "components_json, advantage from rollouts where day = ? order by prompt_id, group_index",
                          [DAY]).fetchall()


def steps(home: Path) -> list[tuple]:
    with sqlite3.connect(home / "data" / "varro.db") as db:
        return db.execute("select step, sequences, loss, kl, clip_fraction from steps where day = ? order by step",
                          [DAY]).fetchall()


def same_checkpoint(a: Path, b: Path) -> None:
    for name in ["adapters.safetensors", "optimizer.safetensors"]:
        x, y = load(a, name), load(b, name)
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_allclose(x[k], y[k], atol=ATOL, err_msg=f"{name}:{k}")


def test_one_process_trained_on_the_two_ranks_rollouts_writes_the_same_checkpoint(pair, solo):
    # Regression: rank 0's choose_prompts drew Walter's curriculum from the trainer's rng and rank 1's
    # did not, so the ranks shuffled the day's rows differently and trained on an overlap of them
    # (adapters 1e-2 off); cycle._sample now hands rank 0's rng state to every rank.
    same_checkpoint(pair, solo)
    moved = load(pair, "adapters.safetensors")
    assert any(np.abs(v).max() > 0 for k, v in moved.items() if k.endswith("lora_b"))  # it really trained
    s2, s1 = steps(pair), steps(solo)
    assert len(s1) == len(s2) == 1 and s1[0][:2] == s2[0][:2] and s1[0][1] >= 2 * GROUP
    np.testing.assert_allclose(s1[0][2:], s2[0][2:], atol=1e-5)


def test_rank_zero_stores_every_rollout_once_scored_as_one_process_scores_it(pair, solo):
    with sqlite3.connect(pair / "data" / "varro.db") as db:
        prompts = {r[0] for r in db.execute("select id from prompts where day = ?", [DAY])}
    two, one = rollouts(pair), rollouts(solo)
    assert len(prompts) == 6 and len(two) == len(prompts) * GROUP  # both ranks' halves gathered
    assert len({(p, g) for p, g, *_ in two}) == len(two) and {r[0] for r in two} == prompts
    assert {r[2] for r in two} == {"base"}  # sampled from the weights before the day, as delay 0 says
    assert all(r[4] is not None for r in two)
    assert [r[:4] for r in one] == [r[:4] for r in two]  # the same rows, not sampled again
    assert [r[4:] for r in one] == [r[4:] for r in two]  # rewards, components and advantages, exactly


@pytest.fixture(scope="module")
def fresh(start, tiny_model_path, tmp_path_factory) -> Path:
    home = copy_home(start, tmp_path_factory, "fresh")
    ok(run([sys.executable, *nightly_args(tiny_model_path)], home))
    return home


def test_a_two_rank_day_is_a_one_process_day(pair, fresh):
    # Regression: cycle._sample seeded rank r with the day's seed + r and each batch drew from one stream, so
    # a delay-0 day's rollouts (its training data) depended on the number of ranks
    assert [r[:4] for r in rollouts(fresh)] == [r[:4] for r in rollouts(pair)]
    same_checkpoint(pair, fresh)
