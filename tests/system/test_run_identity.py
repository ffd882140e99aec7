"""A run remembers what it is: run.toml keeps its app, base model and settings from night to night."""

import json
import tomllib

import pytest
from click.testing import CliRunner

from varro.cli import cli as varro_cli
from varro.engine.run.checkpoints import list_checkpoints
from varro.engine.core.paths import db_path
from varro.engine.run.identity import read_run
from varro.engine.core.paths import run_dir
from walter.cli import cli as walter_cli

DAYS = ["2026-11-02", "2026-11-03", "2026-11-04"]
TINY = ["--embedder", "hash", "--lora-layers", "2"]


def varro(*args):
    return CliRunner().invoke(varro_cli, list(args))


def sampled(day: str, run: str = "varro") -> list[dict]:
    import sqlite3

    with sqlite3.connect(db_path()) as con:
        return [json.loads(r[0]) | {"completion_tokens": r[1], "prompt_id": r[2]} for r in con.execute(
            "select sampling_json, completion_tokens, prompt_id from rollouts where run = ? and day = ?",
            [run, day])]


def test_a_second_night_without_options_keeps_the_first_nights_settings(varro_home, tiny_model_path):
    first = varro("step", "--date", DAYS[0], "--source", "sample", "--model", str(tiny_model_path),
                  "--group-size", "4", "--max-tokens", "6", "--prompts-per-day", "2", "--learning-rate", "0.003",
                  *TINY)
    assert first.exit_code == 0, first.output
    stored = read_run(run_dir("varro"))  # the default run of varro is "varro"
    assert stored["app"] == "varro" and stored["model"] == str(tiny_model_path)
    assert stored["settings"]["sampling"]["group_size"] == 4 and stored["settings"]["train"]["learning_rate"] == 3e-3
    # the cron line's night: no --config, no --model, nothing but the day
    second = varro("step", "--date", DAYS[1], "--source", "sample")
    assert second.exit_code == 0, second.output
    rows = sampled(DAYS[1])
    assert {r["group_size"] for r in rows} == {4} and {r["max_tokens"] for r in rows} == {6}
    assert len(rows) == 2 * 4 and max(r["completion_tokens"] for r in rows) <= 6
    cfg = json.loads((run_dir("varro") / "checkpoints" / DAYS[1] / "config.json").read_text())
    assert cfg["model"]["model"] == str(tiny_model_path) and cfg["train"]["learning_rate"] == 3e-3
    assert "note: setting" not in second.output


def test_a_changed_setting_is_applied_said_logged_and_recorded(varro_home, tiny_model_path):
    base = ["--source", "sample", "--model", str(tiny_model_path), "--group-size", "2", "--max-tokens", "4",
            "--prompts-per-day", "2", *TINY]
    assert varro("step", "--date", DAYS[0], *base).exit_code == 0
    out = CliRunner().invoke(varro_cli, ["nightly", "--date", DAYS[1], "--source", "sample", "--max-tokens", "5"])
    assert out.exit_code == 0, out.output
    notice = (f"setting sampling.max_tokens changed from 4 to 5 for this run from {DAYS[1]} on "
              "(recorded in runs/varro/run.toml)")
    assert notice in out.output
    assert notice in (run_dir("varro") / "logs" / f"{DAYS[1]}.log").read_text()
    meta = json.loads((run_dir("varro") / "checkpoints" / DAYS[1] / "metadata.json").read_text())
    assert notice in json.dumps(meta)
    stored = tomllib.loads((run_dir("varro") / "run.toml").read_text())
    assert stored["settings"]["sampling"]["max_tokens"] == 5
    assert stored["changes"] == [{"day": DAYS[1], "setting": "sampling.max_tokens", "old": 4, "new": 5}]
    # and it stays: the next night without the option samples with 5
    assert varro("step", "--date", DAYS[2], "--source", "sample").exit_code == 0
    assert {r["max_tokens"] for r in sampled(DAYS[2])} == {5}


def test_a_first_night_whose_model_cannot_load_leaves_no_run_behind(varro_home, tiny_model_path):
    out = varro("step", "--date", DAYS[0], "--source", "sample", "--model", "/nonexistent/model", *TINY)
    assert out.exit_code == 1 and len(out.output.splitlines()) == 1
    assert read_run(run_dir("varro")) is None  # so the next night can name the right model


def test_another_base_model_is_refused_before_any_work(varro_home, tiny_model_path, tmp_path):
    assert varro("step", "--date", DAYS[0], "--source", "sample", "--model", str(tiny_model_path),
                 "--group-size", "2", "--max-tokens", "4", "--prompts-per-day", "2", *TINY).exit_code == 0
    other = tmp_path / "other-model"
    other.mkdir()
    for f in tiny_model_path.iterdir():  # a real model folder, just not the run's
        (other / f.name).write_bytes(f.read_bytes()) if f.is_file() else None
    out = varro("step", "--date", DAYS[1], "--source", "sample", "--model", str(other))
    assert out.exit_code == 1
    assert out.output.splitlines() == [
        f"error: run 'varro' was started on base model {tiny_model_path}, not {other}: its adapters only fit "
        "that model; start a new run for " + str(other) + " with --run NAME"]
    assert [p.name for p in list_checkpoints(run_dir("varro"))] == [DAYS[0]]


def test_walter_on_a_varro_run_is_refused_and_the_apps_default_runs_differ(varro_home, tiny_model_path):
    assert varro("step", "--date", DAYS[0], "--source", "sample", "--model", str(tiny_model_path),
                 "--group-size", "2", "--max-tokens", "4", "--prompts-per-day", "2", *TINY).exit_code == 0
    out = CliRunner().invoke(walter_cli, ["step", "--date", DAYS[1], "--source", "sample", "--run", "varro",
                                          "--model", str(tiny_model_path), *TINY])
    assert out.exit_code == 1
    [line] = out.output.splitlines()
    assert line.startswith("error: ") and "varro" in line and "walter" in line
    assert [p.name for p in list_checkpoints(run_dir("varro"))] == [DAYS[0]]
    # without --run each app has its own run, so they never share a lock, a checkpoint folder or a log
    assert CliRunner().invoke(walter_cli, ["step", "--date", DAYS[0], "--source", "sample", "--model",
                                           str(tiny_model_path), "--articles-per-day", "2", "--group-size", "2",
                                           "--max-tokens", "4", *TINY]).exit_code == 0
    assert read_run(run_dir("walter"))["app"] == "walter"
    assert read_run(run_dir("varro"))["app"] == "varro"


@pytest.mark.parametrize("app", ["varro", "walter"])
def test_cron_names_the_existing_run_it_schedules(varro_home, tiny_model_path, app):
    cli = varro_cli if app == "varro" else walter_cli
    fresh = CliRunner().invoke(cli, ["cron"])
    assert fresh.exit_code == 0 and f"{app} nightly --run {app} " in fresh.output
    assert "exists" not in fresh.output
    assert CliRunner().invoke(cli, ["step", "--date", DAYS[0], "--source", "sample", "--model", str(tiny_model_path),
                                    "--group-size", "2", "--max-tokens", "4", *TINY]).exit_code == 0
    out = CliRunner().invoke(cli, ["cron"])
    assert out.exit_code == 0
    line = out.output.splitlines()[1]
    assert line.startswith(f"# run {app} exists: {app} on {tiny_model_path}; the nightly uses its settings from ")
    assert str(run_dir(app) / "run.toml") in line
    other = "walter" if app == "varro" else "varro"
    wrong = CliRunner().invoke(walter_cli if app == "varro" else varro_cli, ["cron", "--run", app])
    assert wrong.exit_code == 1 and wrong.output.startswith(f"error: run '{app}' belongs to {app}: use `{app} cron")
    assert other in wrong.output


def test_a_run_on_another_runs_prompts_is_told_once_and_how_to_get_its_own(varro_home, tiny_model_path):
    common = ["--source", "sample", "--model", str(tiny_model_path), "--group-size", "2", "--max-tokens", "4", *TINY]
    for day in DAYS[:2]:
        assert varro("step", "--date", day, "--run", "a", "--prompts-per-day", "2", *common).exit_code == 0
    same = varro("step", "--date", DAYS[0], "--run", "b", "--prompts-per-day", "2", *common)
    assert same.exit_code == 0 and "were chosen by run" not in same.output  # the same settings choose the same
    first = varro("step", "--date", DAYS[0], "--run", "c", "--prompts-per-day", "4", *common)
    assert first.exit_code == 0, first.output
    [note] = [line for line in first.output.splitlines() if "were chosen by run" in line]
    assert note == (f"  note: the prompts of {DAYS[0]} were chosen by run a with varro.prompts_per_day=2 (this run: "
                    "4); prompts are chosen once per app and day in a data folder, so this run samples those (and "
                    "later days' likewise): give it its own data folder (--home or VARRO_HOME) to have its own")
    assert len(sampled(DAYS[0], "c")) == 2 * 2  # it did sample the stored two prompts
    second = varro("step", "--date", DAYS[1], "--run", "c", "--source", "sample")
    assert second.exit_code == 0, second.output
    assert "were chosen by run" not in second.output  # said once


def test_a_run_from_before_run_toml_is_told_when_its_settings_are_written(tmp_path):
    """The demo's runs have checkpoints and no run.toml: the first nightly writes it from the newest
    checkpoint's settings, and says so once (issue 31: it used to write it silently)."""
    from varro.engine.core.config import Config
    from varro.engine.run.identity import read_run, settle

    legacy = Config()
    legacy.train.learning_rate = 1e-4
    run_path = tmp_path / "runs" / "demo"
    run_path.mkdir(parents=True)
    cfg, notices = settle("varro", "demo", run_path, Config(), {}, "2026-11-06", "now", legacy)
    assert notices == ["wrote runs/demo/run.toml from its newest checkpoint's settings (the run had none): later "
                       "nights keep them unless a setting is given again"]
    assert cfg.train.learning_rate == 1e-4 and read_run(run_path)["settings"]["train"]["learning_rate"] == 1e-4
    assert settle("varro", "demo", run_path, Config(), {}, "2026-11-07", "now")[1] == []
