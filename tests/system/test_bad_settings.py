"""Bad settings cost one line before anything runs, never a night (issue 30).

- A number the night cannot use (NaN, infinity, a group of one, zero tokens,
  zero minibatches, zero prompts, a share above 1) is refused when the config
  is resolved, before run.toml or a checkpoint is written.
- A config file that is not UTF-8 is one line naming the file and the byte.
- A NaN KL trips the guard; NaN weights never become a checkpoint.
- A run whose checkpoints folder was deleted does not restart from the base.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from click.testing import CliRunner

from varro.cli import cli as varro_cli
from varro.engine import store
from varro.engine.run.checkpoints import (CheckpointError, LostCheckpointsError, list_checkpoints, require_not_lost,
                                      save_checkpoint)
from varro.engine.core.config import Config, check_allowed, load_config
from varro.engine.core.errors import ConfigError
from varro.engine.train.guards import kl_tripped
from varro.engine.core.paths import db_path
from varro.engine.run.policy import Policy
from varro.engine.core.paths import run_dir
from walter.cli import cli as walter_cli

DAY = "2026-11-02"

BAD = [  # (option, value, what the message must say)
    ("--learning-rate", "nan", "train.learning_rate must be a finite number, got nan"),
    ("--learning-rate", "inf", "train.learning_rate must be a finite number, got inf"),
    ("--learning-rate", "0", "train.learning_rate must be > 0, got 0.0"),
    ("--group-size", "-4", "sampling.group_size must be >= 2, got -4"),
    ("--group-size", "1", "sampling.group_size must be >= 2, got 1"),
    ("--max-tokens", "0", "sampling.max_tokens must be >= 1, got 0"),
    ("--minibatches", "0", "train.minibatches must be >= 1, got 0"),
    ("--micro-batch", "-1", "train.micro_batch must be >= 0, got -1"),
    ("--prompts-per-day", "0", "varro.prompts_per_day must be >= 1, got 0"),
    ("--memory-fraction", "1.5", "train.memory_fraction must be >= 0 and <= 1, got 1.5"),
    ("--kl-max", "nan", "train.kl_max must be a finite number, got nan"),
]


@pytest.mark.parametrize("option,value,message", BAD, ids=[f"{o}={v}" for o, v, _ in BAD])
def test_step_refuses_a_bad_setting_before_the_run_exists(varro_home, option, value, message):
    out = CliRunner().invoke(varro_cli, ["step", "--date", DAY, "--source", "sample", "--home", str(varro_home),
                                         option, value])
    assert out.exit_code == 2, out.output
    assert f"command line: {message}" in out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)  # no traceback
    assert not run_dir("varro", varro_home).exists()  # no run.toml holding the bad value for the next night
    assert not (varro_home / "data").exists()


def test_walter_refuses_zero_articles(varro_home):
    out = CliRunner().invoke(walter_cli, ["step", "--date", DAY, "--source", "sample", "--home", str(varro_home),
                                          "--articles-per-day", "0"])
    assert out.exit_code == 2 and "walter.articles_per_day must be >= 1, got 0" in out.output, out.output
    assert not run_dir("walter", varro_home).exists()


def test_config_file_nan_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "night.toml"
    path.write_text("[train]\nlearning_rate = nan\n\n[tally]\ngroups_per_day = 0\n")
    with pytest.raises(ConfigError, match=f"{path}: train.learning_rate must be a finite number, got nan"):
        load_config(path)
    path.write_text("[tally]\ngroups_per_day = 0\n")
    with pytest.raises(ConfigError, match="tally.groups_per_day must be >= 1, got 0"):
        load_config(path)


def test_a_bad_value_in_a_saved_config_is_refused_naming_it():
    """A run.toml or config.json written before the check still cannot start a night with its bad value."""
    data = Config().to_dict()
    data["sampling"]["group_size"] = -4
    with pytest.raises(ConfigError, match="sampling.group_size must be >= 2, got -4"):
        Config.from_dict(data)


def test_the_defaults_obey_their_own_rules():
    for name, section in Config().sections().items():
        for f in dataclasses.fields(section):
            check_allowed(getattr(section, f.name), f, f"{name}.{f.name}", "defaults")


def test_config_file_not_utf8_names_the_file_and_byte(tmp_path, varro_home):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9 settings\n[train]\nlearning_rate = 1e-5\n")
    with pytest.raises(ConfigError, match=rf"config file {path} is not UTF-8 text: byte 5 is b'\\xe9'"):
        load_config(path)
    out = CliRunner().invoke(varro_cli, ["ingest", "--date", DAY, "--source", "sample", "--home", str(varro_home),
                                         "--config", str(path)])
    assert out.exit_code == 2 and "is not UTF-8 text: byte 5" in out.output, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)


def test_nan_kl_trips_the_guard_and_none_does_not():
    """Regression: `nan > kl_max` is False, so a NaN KL used to pass as a healthy one."""
    rows = [{"step": 1, "minibatch": 0, "kl": 0.0}, {"step": 2, "minibatch": 1, "kl": None},
            {"step": 3, "minibatch": 2, "kl": 0.01, "kl_after": None}]
    assert kl_tripped(rows, 1.0) is None
    assert "step 3 KL nan" in kl_tripped([*rows[:2], {**rows[2], "kl": math.nan}], 1.0)
    assert "KL inf after the day's last step 3" in kl_tripped([*rows[:2], {**rows[2], "kl_after": math.inf}], 1.0)


def test_nan_weights_never_become_a_checkpoint(tmp_path):
    cfg = Config()
    cfg.model.fine_tune = "full"  # every parameter is saved: a plain module serves as the model
    model = nn.Linear(2, 2)
    model.update({"weight": mx.array([[1.0, math.nan], [0.0, 1.0]])})
    with pytest.raises(CheckpointError, match=f"checkpoint {DAY} not written: 1 of 2 weight arrays hold NaN"):
        save_checkpoint(tmp_path, DAY, model, None, 1, np.random.default_rng(0), cfg)
    assert list_checkpoints(tmp_path) == [] and not any((tmp_path / "checkpoints").glob("*"))


def history_home(varro_home, steps=(), sampled_by=()) -> Path:
    """runs/r of a home whose database records `steps` days of training and rollouts sampled by the
    checkpoints `sampled_by` (the next day each), with no checkpoints folder."""
    db = store.open_db(db_path(varro_home))
    for k, day in enumerate(steps):
        db["steps"].insert({"run": "r", "day": day, "step": k + 1, "minibatch": 0, "skipped": 0})
    for k, label in enumerate(sampled_by):
        db["prompts"].insert({"id": f"p{k}", "app": "varro", "day": label}, pk="id", alter=True)
        db["rollouts"].insert({"run": "r", "day": label, "prompt_id": f"p{k}", "checkpoint": label,
                               "group_index": 0})
    db.conn.close()
    return run_dir("r", varro_home)


def test_deleted_checkpoints_folder_is_an_error_not_a_new_run(varro_home):
    """Regression: a run whose checkpoints folder was deleted went on from the base weights, silently."""
    run = history_home(varro_home, steps=["2026-11-02", "2026-11-03"])
    cfg = Config()
    cfg.model.model = str(varro_home / "no-model-needed")  # refused before the model loads
    with pytest.raises(LostCheckpointsError, match=(
            rf"run r has 2 days of checkpoints in its history \(last 2026-11-03, in .*varro.db\) but none "
            rf"under {run / 'checkpoints'}: restore that folder, or start over under a new --run NAME")):
        Policy.open(cfg, run, before_day="2026-11-04")


def test_rollouts_sampled_by_a_checkpoint_are_history(varro_home):
    run = history_home(varro_home, sampled_by=["2026-11-03"])
    with pytest.raises(LostCheckpointsError, match="has 1 days of checkpoints in its history"):
        require_not_lost(run, "2026-11-04")


def test_first_nights_and_reruns_are_not_lost(varro_home):
    """No database, a database without the run, the run's first day, and a day re-run whose own checkpoint
    was removed (its history starts that day) all start from the base as before."""
    run = run_dir("r", varro_home)
    require_not_lost(run, "2026-11-02")  # no database yet
    history_home(varro_home, steps=["2026-11-02"], sampled_by=["2026-11-02"])
    require_not_lost(run_dir("other", varro_home), "2026-11-05")
    require_not_lost(run, "2026-11-02")
    require_not_lost(run, None)
