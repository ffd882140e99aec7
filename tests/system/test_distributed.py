"""Data parallelism with `mlx.launch -n 2 --backend ring` on localhost against one process.

Both runs start from the same database and checkpoint (day 1 sampled by one
process), then train day 2: the two-process checkpoint must equal the
one-process one within ATOL, and rank 0 must hold every rollout row exactly once.
"""

import os
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from support.distributed import ATOL, LAUNCH, load, run
from support.preloaded import run as run_preloaded


def nightly_args(model, day):
    return ["-m", "varro.cli", "nightly", "--run", "d", "--source", "sample", "--quiet", "--date", day,
            "--model", str(model), "--embedder", "hash", "--max-tokens", "10", "--prompts-per-day", "4",
            "--lora-layers", "2", "--group-size", "4", "--learning-rate", "5e-3", "--kl-max", "1000",
            "--minibatches", "1"]


@pytest.fixture(scope="module")
def homes(tiny_model_path, tmp_path_factory, preloaded):
    one = tmp_path_factory.mktemp("one")
    first = run([sys.executable, *nightly_args(tiny_model_path, "2026-11-02")], one, preloaded("reference"))
    assert first.returncode == 0, first.stderr
    two = tmp_path_factory.mktemp("two")
    shutil.copytree(one, two, dirs_exist_ok=True)
    solo = run([sys.executable, *nightly_args(tiny_model_path, "2026-11-03")], one, preloaded("rerun"))
    assert solo.returncode == 0, solo.stderr
    pair = run([str(LAUNCH), "-n", "2", "--backend", "ring", "--", sys.executable,
                *nightly_args(tiny_model_path, "2026-11-03")], two)
    assert pair.returncode == 0, pair.stdout + pair.stderr
    return one, two


def test_two_processes_give_the_same_checkpoint(homes):
    one, two = homes
    for name in ["adapters.safetensors", "optimizer.safetensors"]:
        a, b = load(one, name), load(two, name)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=ATOL, err_msg=f"{name}:{k}")
    moved = load(one, "adapters.safetensors")
    assert any(np.abs(v).max() > 0 for k, v in moved.items() if k.endswith("lora_b"))  # it really trained
    q = "select step, sequences, loss, kl, clip_fraction from steps where day = '2026-11-03' order by step"
    s1 = sqlite3.connect(Path(one) / "data" / "varro.db").execute(q).fetchall()
    s2 = sqlite3.connect(Path(two) / "data" / "varro.db").execute(q).fetchall()
    assert len(s1) == len(s2) == 1
    for r1, r2 in zip(s1, s2):
        assert r1[:2] == r2[:2]
        np.testing.assert_allclose(r1[2:], r2[2:], atol=1e-5)


def test_rank_zero_holds_every_rollout_exactly_once(homes):
    _, two = homes
    db = sqlite3.connect(Path(two) / "data" / "varro.db")
    rows = db.execute("select prompt_id, group_index, checkpoint from rollouts where day = '2026-11-03'").fetchall()
    prompts = {r[0] for r in db.execute("select id from prompts where day = '2026-11-03'")}
    assert len(rows) == len(prompts) * 4
    assert len(set((p, g) for p, g, _ in rows)) == len(rows)
    assert {p for p, _, _ in rows} == prompts
    assert {c for _, _, c in rows} == {"2026-11-03"}
    assert len(list((Path(two) / "runs" / "d" / "checkpoints").glob("20*"))) == 2


def test_a_dying_rank_fails_the_step_cleanly_and_the_rerun_resumes(tiny_model_path, tmp_path, preloaded):
    import json

    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * 2))
    args = [sys.executable, *nightly_args(tiny_model_path, "2026-11-02"), "--hosts", str(hostfile)]
    i = args.index("--date")
    args[i:i + 2] = ["--from", "2026-11-02", "--to", "2026-11-03"]
    env = {**os.environ, "VARRO_HOME": str(tmp_path), "VARRO_FAILPOINT": "train.step", "VARRO_FAILPOINT_RANK": "1"}
    # the command that relaunches itself through mlx.launch is forked from a preloaded Python; its ranks are not
    died = run_preloaded(preloaded("killed"), args, env, tmp_path.with_name(f"{tmp_path.name}.out"))
    assert died.returncode == 1
    assert "did not finish 2026-11-03" in died.stderr
    ckpts = Path(tmp_path) / "runs" / "d" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir() if not p.name.startswith(".tmp-")) == ["2026-11-02", "latest"]
    db = sqlite3.connect(Path(tmp_path) / "data" / "varro.db")
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert db.execute("select count(*) from steps").fetchone()[0] == 0
    db.close()
    env.pop("VARRO_FAILPOINT")
    again = run_preloaded(preloaded("rerun"), args, env, tmp_path.with_name(f"{tmp_path.name}.out"))
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in ckpts.iterdir() if not p.name.startswith(".tmp-")) == ["2026-11-02", "2026-11-03", "latest"]
