"""Naming a checkpoint ('base', 'latest', a day) and opening the policy exactly at it, as compare and eval do."""
import pytest

from support.helpers import open_policy, tiny_config
from varro.engine.run.checkpoints import CheckpointError, resolve_label
from varro.engine.run.policy import Policy


def test_a_label_resolves_to_a_complete_checkpoint_or_says_what_the_run_has(tiny_model_path, tmp_path):
    run = tmp_path / "run"
    assert resolve_label(run, "base") == "base"
    with pytest.raises(CheckpointError, match="run run has no checkpoint yet"):
        resolve_label(run, "latest")
    pol = open_policy(tiny_model_path, run)
    pol.save("2026-11-02")
    pol.save("2026-11-03")
    assert resolve_label(run, "latest") == "2026-11-03"
    assert resolve_label(run, "2026-11-02") == "2026-11-02"
    with pytest.raises(CheckpointError, match=r"no checkpoint 2026-11-05; it has \['2026-11-02', '2026-11-03'\]"):
        resolve_label(run, "2026-11-05")


def test_the_policy_at_a_checkpoint_has_the_config_it_was_trained_with(tiny_model_path, tmp_path):
    run = tmp_path / "run"
    pol = open_policy(tiny_model_path, run, learning_rate=3e-4)
    pol.save("2026-11-02")
    pol.save("2026-11-03")
    (run / "checkpoints" / "2026-11-03" / "adapters.safetensors").write_bytes(b"garbage")
    fallback = tiny_config(tiny_model_path, learning_rate=1e-6)

    at = Policy.at_checkpoint(run, "2026-11-02", fallback)
    assert at.checkpoint == "2026-11-02" and at.config.train.learning_rate == 3e-4
    base = Policy.at_checkpoint(run, "base", fallback)
    assert base.checkpoint == "base" and base.config.train.learning_rate == 1e-6
    with pytest.raises(CheckpointError, match=r"checkpoint 2026-11-03 could not be restored \(got 2026-11-02\)"):
        Policy.at_checkpoint(run, "2026-11-03", fallback)
