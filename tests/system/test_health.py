"""Training health and resources: collapse guards, corrupt-checkpoint fallback, retention, a full disk."""

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlx.utils import tree_flatten

from support.helpers import building_home, copy_home, tiny_config
from support.preloaded import run as run_preloaded
from varro.engine.run import checkpoints
from varro.engine import store as dbm
from support.helpers import varro_step as step
from varro.engine.embed.embedders import HashEmbedder


def cfg_for(model, **train):
    cfg = tiny_config(model, **train)
    cfg.sampling.max_tokens = 10
    cfg.varro.prompts_per_day = 3
    cfg.sampling.group_size = 4
    return cfg


def adapters(path):
    import mlx.core as mx

    return {k: np.array(v) for k, v in mx.load(str(path / "adapters.safetensors")).items()}


def test_kl_guard_discards_the_day_and_keeps_the_previous_weights(tiny_model_path, tmp_path):
    db = dbm.open_db(tmp_path / "v.db")
    cfg = cfg_for(tiny_model_path, learning_rate=5e-2, beta=0.05, kl_max=1e-9)
    run = tmp_path / "runs" / "r"
    step(db, cfg, "r", run, "2026-11-02", HashEmbedder())
    res = step(db, cfg, "r", run, "2026-11-03", HashEmbedder())
    assert any("exceeded kl_max" in n for n in res.notes)
    rows = list(db.query("select step, kl from steps where day = '2026-11-03' order by step"))
    assert rows[0]["kl"] == 0.0 and rows[-1]["kl"] > 1e-9 and len(rows) == 2  # stopped at the first trip
    a, b = adapters(run / "checkpoints" / "2026-11-02"), adapters(run / "checkpoints" / "2026-11-03")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    guard = db.execute("select kind, reason from guards where day = '2026-11-03' and kind = 'kl'").fetchall()
    assert len(guard) == 1 and "kl_max" in guard[0][1] and "also tripped" not in guard[0][1]
    skipped = db.execute("select skipped, skip_reason from steps where day = '2026-11-03'").fetchall()
    assert skipped == [(1, "discarded by the kl guard")] * 2  # the updates went with the day's weights
    # the next day starts from the kept weights and trips on its own update again: it says the run is stuck
    res = step(db, cfg, "r", run, "2026-11-04", HashEmbedder())
    stuck = [n for n in res.notes if "also tripped on 2026-11-03" in n]
    assert len(stuck) == 1 and "stuck on checkpoint 2026-11-03" in stuck[0]
    day4 = list(db.query("select step, minibatch, kl from steps where day = '2026-11-04' order by step"))
    assert len(day4) == 2
    # the next day continues the step numbers and trains normally under a limit it cannot reach (at this
    # learning rate a day's KL runs from about 3 to 270 depending on the draws)
    cfg.train.kl_max = 1e6
    step(db, cfg, "r", run, "2026-11-05", HashEmbedder())
    nxt = [r["step"] for r in db.query("select step from steps where day = '2026-11-05' order by step")]
    assert nxt[0] == day4[-1]["step"] + 1
    assert not db.execute("select count(*) from guards where day = '2026-11-05' and kind = 'kl'").fetchone()[0]


def test_kl_of_the_weights_a_day_starts_from_does_not_trip_it():
    """Only KLs of weights the day made count: the first step's (measured before any update) is the KL of
    the weights a trip would keep, so tripping on it would revert to them and trip again the next day."""
    from varro.engine.train.guards import kl_tripped

    rows = [{"step": 7, "minibatch": 0, "kl": 0.5, "kl_after": None},
            {"step": 8, "minibatch": 1, "kl": 0.05, "kl_after": 0.06}]
    assert kl_tripped(rows, 0.1) is None
    rows[1]["kl_after"] = 0.2
    assert "after the day's last step 8" in kl_tripped(rows, 0.1)
    rows[1]["kl_after"], rows[1]["kl"] = 0.06, 0.3
    assert "step 8 KL 0.300" in kl_tripped(rows, 0.1)


def cache_cells(db, run, prompt_ids, rewards: dict[str, float], seed=0, samples=2):
    """Every cell of `prompt_ids` cached for each checkpoint of `rewards`, at its one reward."""
    db["panel_scores"].insert_all([{"run": run, "checkpoint": c, "prompt_id": p, "seed": seed, "samples": samples,
                                    "sample_index": k, "completion": "", "reward": r, "components_json": "{}",
                                    "created_utc": "x"}
                                   for c, r in rewards.items() for p in prompt_ids for k in range(samples)])


def cache_panel(db, run, prompt_ids, rewards: dict[str, float]):
    """Panel members `prompt_ids` of `run` with every checkpoint's cells cached at one reward each."""
    db["panel"].insert_all([{"run": run, "position": i, "prompt_id": p, "story_id": p, "added_utc": "x"}
                            for i, p in enumerate(prompt_ids)])
    cache_cells(db, run, prompt_ids, rewards)


def test_eval_guard_reads_the_fixed_panel_not_the_days_mix(tiny_model_path, tmp_path):
    db = dbm.open_db(tmp_path / "v.db")
    cfg = cfg_for(tiny_model_path)
    cfg.varro.prompts_per_day, cfg.varro.eval_every = 8, 4  # both days get eval and training prompts
    run = tmp_path / "runs" / "r"
    for d in ["2026-11-02", "2026-11-03"]:
        step(db, cfg, "r", run, d, HashEmbedder())
    # day 2's held-out forecasts look far worse than day 1's: other prompts, not a worse model
    db.execute("update rollouts set reward = 0.0, components_json = '{}' where day = '2026-11-03'")
    db.execute("update rollouts set reward = -5.0 where day = '2026-11-03' and prompt_id in "
               "(select id from prompts where split = 'eval')")
    db.execute("update rollouts set reward = group_index where day = '2026-11-03' and prompt_id in "
               "(select id from prompts where split = 'train')")  # groups with signal: it would train
    db.conn.commit()
    panel = [r[0] for r in db.execute("select id from prompts where split = 'eval' order by id limit 3")]
    cache_panel(db, "r", panel, {"base": 0.30, "2026-11-02": 0.32, "2026-11-03": 0.29})  # steady on the panel
    res = step(db, cfg, "r", run, "2026-11-04", HashEmbedder())
    assert res.steps > 0 and not any("not training today" in n for n in res.notes)
    # the panel itself drops: checkpoint 2026-11-04 far below the best, so 2026-11-05 does not train
    cache_cells(db, "r", panel, {"2026-11-04": 0.0})
    res = step(db, cfg, "r", run, "2026-11-05", HashEmbedder())
    reason = [n for n in res.notes if "not training today" in n]
    assert res.steps == 0 and len(reason) == 1
    assert "checkpoint 2026-11-04 is 0.320 below the best 0.320 (2026-11-02)" in reason[0]
    assert db.execute("select kind from guards where day = '2026-11-05' and kind = 'eval'").fetchone()[0] == "eval"
    assert (run / "checkpoints" / "2026-11-05" / "metadata.json").is_file()


@pytest.fixture(scope="module")
def two_days_once(tiny_model_path, tmp_path_factory):
    """Run "r" over 2026-11-02 and 03 at learning rate 2e-2, run once for the module (seeded: each test's
    copy is what running the two days afresh would give)."""
    folder = tmp_path_factory.mktemp("two-days")
    with building_home(folder):
        db = dbm.open_db(folder / "v.db")
        for d in ["2026-11-02", "2026-11-03"]:
            step(db, cfg_for(tiny_model_path, learning_rate=2e-2), "r", folder / "runs" / "r", d, HashEmbedder())
        db.conn.close()
    return folder


@pytest.fixture
def two_days(two_days_once, tiny_model_path, tmp_path):
    """(db, cfg, run path) of the two days, copied into this test's folder: the tests break a checkpoint."""
    copy_home(two_days_once, tmp_path)
    return dbm.open_db(tmp_path / "v.db"), cfg_for(tiny_model_path, learning_rate=2e-2), tmp_path / "runs" / "r"


def test_corrupt_checkpoint_falls_back_loudly(two_days):
    db, cfg, run = two_days
    (run / "checkpoints" / "2026-11-03" / "adapters.safetensors").write_bytes(b"\0" * 100)
    res = step(db, cfg, "r", run, "2026-11-04", HashEmbedder())
    assert any("WARNING: checkpoint 2026-11-03 is unusable" in n for n in res.notes)
    assert any("resumed from 2026-11-02" in n for n in res.notes)
    kinds = {r[0] for r in db.execute("select kind from guards where day = '2026-11-04'")}
    assert "checkpoint" in kinds and "sampled" in kinds  # 2026-11-03 sampled the rollouts: not trained on


def test_retention_keeps_the_newest(tiny_model_path, tmp_path):
    from varro.engine.run.policy import Policy

    run = tmp_path / "runs" / "r"
    pol = Policy.open(cfg_for(tiny_model_path), run)
    for d in ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]:
        pol.save(d)
    (checkpoints.checkpoints_dir(run) / ".tmp-2026-11-06-99").mkdir()
    assert checkpoints.prune(run, keep=2) == ["2026-11-02", "2026-11-03"]
    assert [p.name for p in checkpoints.list_checkpoints(run)] == ["2026-11-04", "2026-11-05"]
    assert sorted(p.name for p in checkpoints.checkpoints_dir(run).iterdir()) == ["2026-11-04", "2026-11-05", "latest"]
    assert (checkpoints.checkpoints_dir(run) / "latest").resolve().name == "2026-11-05"
    assert checkpoints.prune(run, keep=5) == []
    with pytest.raises(checkpoints.CheckpointError, match="at least 1"):
        checkpoints.prune(run, keep=0)


def nightly(server, model, home, day):
    """The nightly as a process forked from `server` (tests/support/preloaded.py), as the crash tests run it."""
    env = {**os.environ, "VARRO_HOME": str(home)}
    cmd = [sys.executable, "-m", "varro.cli", "nightly", "--run", "r", "--source", "sample", "--quiet",
           "--date", day, "--model", str(model), "--embedder", "hash", "--max-tokens", "10",
           "--prompts-per-day", "3", "--lora-layers", "2", "--group-size", "4"]
    return run_preloaded(server, cmd, env, Path(f"{home}.out"))


def test_full_disk_during_a_checkpoint_keeps_the_previous_one_and_the_database(tiny_model_path, tmp_path,
                                                                              preloaded):
    home = tmp_path / "home"
    runs = home / "runs"
    runs.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(runs)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        server = preloaded("reference")
        assert nightly(server, tiny_model_path, home, "2026-11-02").returncode == 0
        first = runs / "r" / "checkpoints" / "2026-11-02"
        before = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in first.iterdir()}
        size = sum(f.stat().st_size for f in first.iterdir())
        free = os.statvfs(runs).f_bavail * os.statvfs(runs).f_frsize
        filler = runs / "filler"
        filler.write_bytes(b"\0" * max(0, free - size // 3))  # room for a third of a checkpoint
        failed = nightly(server, tiny_model_path, home, "2026-11-03")
        assert failed.returncode != 0
        assert "could not write" in failed.stderr and "MB free on that disk" in failed.stderr
        assert "Traceback" not in failed.stderr
        assert [p.name for p in checkpoints.list_checkpoints(runs / "r")] == ["2026-11-02"]
        assert not (runs / "r" / "checkpoints" / "2026-11-03").exists()
        assert {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in first.iterdir()} == before
        con = sqlite3.connect(home / "data" / "varro.db")
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert con.execute("select count(*) from rollouts where day = '2026-11-02'").fetchone()[0] == 12
        con.close()
        filler.unlink()
        again = nightly(server, tiny_model_path, home, "2026-11-03")
        assert again.returncode == 0, again.stderr
        assert [p.name for p in checkpoints.list_checkpoints(runs / "r")] == ["2026-11-02", "2026-11-03"]
    finally:
        subprocess.run(["umount", "-l", str(runs)], capture_output=True)


def test_guards_show_in_the_report(tiny_model_path, tmp_path):
    from varro.engine.eval.report import build_report, format_summary, report_data

    db = dbm.open_db(tmp_path / "v.db")
    cfg = cfg_for(tiny_model_path, learning_rate=5e-2, beta=0.05, kl_max=1e-9)
    run = tmp_path / "runs" / "r"
    for d in ["2026-11-02", "2026-11-03"]:
        step(db, cfg, "r", run, d, HashEmbedder())
    data = report_data(db, "varro", "r")
    assert [(g["day"], g["kind"]) for g in data["guards"] if g["kind"] != "flat"] == [("2026-11-03", "kl")]
    assert "GUARD 2026-11-03 (kl)" in format_summary(data)
    page = build_report(db, "varro", "r", tmp_path / "r.html").read_text()
    assert "Training health" in page and "kl guard" in page


def test_training_refuses_rollouts_another_checkpoint_sampled(two_days, tmp_path):
    """Varro trains on 2026-11-04 on the forecasts checkpoint 2026-11-03 sampled; with the checkpoints folder
    gone, training would start from the base weights on them: the day says so in one line, records it and
    trains nothing (its checkpoint holds the weights it started from)."""
    import shutil

    from varro.engine.loop.cycle import sampled_elsewhere

    db, cfg, run = two_days
    assert {r[0] for r in db.execute("select checkpoint from rollouts where day = '2026-11-03'")} == {"2026-11-03"}
    shutil.rmtree(run / "checkpoints")
    res = step(db, cfg, "r", run, "2026-11-04", HashEmbedder())
    note = [n for n in res.notes if "sampled by checkpoint 2026-11-03" in n]
    assert len(note) == 1 and "\n" not in note[0] and "start from base" in note[0]
    assert res.steps == 0 and not db.execute("select count(*) from steps where day = '2026-11-04'").fetchone()[0]
    guard = db.execute("select reason from guards where day = '2026-11-04' and kind = 'sampled'").fetchall()
    assert guard == [(note[0],)]
    from varro.engine.run.policy import Policy

    base = Policy.open(cfg, tmp_path / "runs" / "fresh", before_day="0000-01-01")
    kept = adapters(run / "checkpoints" / "2026-11-04")
    assert all(np.array_equal(np.array(v), kept[k]) for k, v in tree_flatten(base.model.trainable_parameters()))
    assert sampled_elsewhere(dbm.load_groups(db, "r", "2026-11-03"), "2026-11-03", "2026-11-03") is None
