"""Checkpoints: atomic, loadable by mlx-lm, and resuming the same optimisation."""

import mlx.core as mx
import numpy as np
import pytest
from pathlib import Path
from mlx.utils import tree_flatten
from mlx_lm import load

from support.helpers import open_policy, scored_groups
from varro.engine.run import checkpoints
from varro.engine.run.checkpoints import CheckpointError
from varro.engine.train.logprobs import token_logprobs


def test_checkpoint_reloads_in_mlx_lm_with_same_logprobs(tiny_model_path, tmp_path):
    run = tmp_path / "run"
    pol = open_policy(tiny_model_path, run, learning_rate=2e-2)
    groups = scored_groups(pol, seed=1)
    pol.trainer.train_day(groups)
    path = pol.save("2026-11-02")
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["adapters.safetensors", "adapter_config.json", "optimizer.safetensors",
         "trainer_state.json", "config.json", "metadata.json"])
    r = groups[0][0]
    seq = mx.array([r.prompt_tokens + r.completion_tokens])
    ours = token_logprobs(pol.model, seq[:, :-1], seq[:, 1:])
    model, _ = load(str(tiny_model_path), adapter_path=str(path))
    theirs = token_logprobs(model, seq[:, :-1], seq[:, 1:])
    base, _ = load(str(tiny_model_path))
    untrained = token_logprobs(base, seq[:, :-1], seq[:, 1:])
    np.testing.assert_allclose(np.array(ours), np.array(theirs), atol=1e-5)
    assert np.abs(np.array(ours) - np.array(untrained)).max() > 1e-3  # the adapters matter


def test_resume_continues_the_same_optimisation(tiny_model_path, tmp_path):
    # One process trains two days straight; another stops after day 1 and resumes.
    straight = open_policy(tiny_model_path, tmp_path / "a")
    g1, g2 = scored_groups(straight, seed=11), scored_groups(straight, seed=12)
    straight.trainer.train_day(g1)
    straight.trainer.train_day(g2)

    first = open_policy(tiny_model_path, tmp_path / "b")
    first.trainer.train_day(scored_groups_like(g1))
    first.save("2026-11-02")
    resumed = open_policy(tiny_model_path, tmp_path / "b", before_day="2026-11-03")
    assert resumed.checkpoint == "2026-11-02"
    assert resumed.trainer.step == first.trainer.step
    resumed.trainer.train_day(scored_groups_like(g2))
    a = dict(tree_flatten(straight.model.trainable_parameters()))
    b = dict(tree_flatten(resumed.model.trainable_parameters()))
    for k in a:
        np.testing.assert_allclose(np.array(a[k]), np.array(b[k]), atol=1e-6)
    assert int(resumed.trainer.optimizer.state["step"].item()) == int(straight.trainer.optimizer.state["step"].item())


def scored_groups_like(groups):
    from copy import deepcopy

    return deepcopy(groups)


def test_find_latest_trusts_only_complete_folders(tiny_model_path, tmp_path):
    run = tmp_path / "run"
    pol = open_policy(tiny_model_path, run)
    pol.save("2026-11-02")
    root = checkpoints.checkpoints_dir(run)
    (root / "2026-11-04").mkdir()  # no metadata: a crash mid-write must not count
    (root / ".tmp-2026-11-05-1").mkdir()
    assert checkpoints.find_latest(run).name == "2026-11-02"
    assert checkpoints.find_latest(run, before="2026-11-02") is None
    with pytest.raises(CheckpointError, match="already exists"):
        pol.save("2026-11-02")


def test_failed_write_leaves_nothing_behind(tiny_model_path, tmp_path, monkeypatch):
    run = tmp_path / "run"
    pol = open_policy(tiny_model_path, run)
    real = mx.save_safetensors

    def failing(path, *a, **k):
        if path.endswith("optimizer.safetensors"):
            raise OSError(28, "No space left on device")
        return real(path, *a, **k)

    monkeypatch.setattr(mx, "save_safetensors", failing)
    with pytest.raises(CheckpointError, match="No space left on device"):
        pol.save("2026-11-02")
    assert list(checkpoints.checkpoints_dir(run).iterdir()) == []


@pytest.mark.parametrize("name", ["adapter_config.json", "trainer_state.json", "config.json"])
def test_a_full_disk_on_any_file_of_a_checkpoint_is_one_clear_error(tiny_model_path, tmp_path, monkeypatch, name):
    """The JSON files, not only the arrays: a full disk there raised a bare OSError with a traceback."""
    run = tmp_path / "run"
    pol = open_policy(tiny_model_path, run)
    real = Path.write_text

    def failing(self, *a, **k):
        if self.name == name:
            raise OSError(28, "No space left on device", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", failing)
    with pytest.raises(CheckpointError, match=f"could not write {name} of checkpoint 2026-11-02: .*MB free"):
        pol.save("2026-11-02")
    assert list(checkpoints.checkpoints_dir(run).iterdir()) == []


def test_corrupt_checkpoint_is_detected(tiny_model_path, tmp_path):
    run = tmp_path / "run"
    pol = open_policy(tiny_model_path, run)
    path = pol.save("2026-11-02")
    (path / "adapters.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoints.verify_checkpoint(path)
