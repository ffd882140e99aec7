"""Every mistake said in one line: a wrong run name, a data folder without a database, a model that is
not there, and output paths taken from the folder the command was started in."""

import pytest
from click.testing import CliRunner

from support.helpers import tiny_config
from support.helpers import varro_day_metrics, varro_step, walter_day_metrics, walter_step
from varro.engine import store as dbm
from varro.cli import cli as varro_cli
from varro.engine.core.config import load_config
from varro.engine.embed.embedders import HashEmbedder
from varro.engine.core.paths import db_path
from varro.engine.core.paths import run_dir
from walter.cli import cli as walter_cli
from walter.sample import ingest_sample_day

DAYS = ["2026-11-02", "2026-11-03"]
TINY = ["--embedder", "hash", "--max-tokens", "8", "--lora-layers", "2"]


@pytest.fixture(scope="module")
def home(tiny_model_path, tmp_path_factory):
    """Varro run 'v' (two sample days: rollouts and checkpoints) and Walter run 'w' (its first sample day:
    a checkpoint and no rollouts, so it exists by its checkpoints folder alone)."""
    home = tmp_path_factory.mktemp("silence") / "home"
    db = dbm.open_db(db_path(home))
    cfg = tiny_config(tiny_model_path)
    cfg.sampling.max_tokens = 8
    cfg.varro.prompts_per_day, cfg.varro.eval_every = 8, 4
    cfg.walter.articles_per_day, cfg.walter.eval_every = 4, 4
    for day in DAYS:
        varro_step(db, cfg, "v", run_dir("v", home), day, HashEmbedder())
    walter_step(db, cfg, "w", run_dir("w", home), DAYS[0], HashEmbedder(), ingest_sample_day)
    db.conn.close()
    return home


def invoke(app: str, args: list[str], **kw):
    return CliRunner().invoke(varro_cli if app == "varro" else walter_cli, args, **kw)


READING = {
    "metrics": ["metrics"],
    "report": ["report"],
    "compare": ["compare", "--embedder", "hash"],
    "eval": ["eval", "--embedder", "hash"],
}


@pytest.mark.parametrize("command", list(READING))
@pytest.mark.parametrize("app,existing", [("varro", "v"), ("walter", "w")])
def test_a_run_that_does_not_exist_is_one_line_naming_the_runs_that_do(home, app, existing, command):
    out = invoke(app, [*READING[command], "--home", str(home), "--run", "nope"])
    assert out.exit_code == 1, out.output
    [line] = out.output.splitlines()
    assert line == (f"error: no {app} rollouts for run 'nope' and no checkpoint in {home / 'runs' / 'nope'}"
                    f"/checkpoints; the {app} runs are: {existing}")
    assert not (home / "runs" / "nope").exists()


@pytest.mark.parametrize("args", [["metrics"], ["rollouts"], ["rollouts", "show", "1"], ["report"],
                                  ["eval", "--embedder", "hash"], ["compare", "--embedder", "hash"],
                                  ["hacks", "--embedder", "hash"]])
def test_a_data_folder_without_a_database_is_one_line_and_stays_empty(varro_home, args):
    out = invoke("varro", args)
    assert out.exit_code == 1, out.output
    assert out.output.splitlines() == [f"error: no database at {varro_home / 'data' / 'varro.db'}: run `varro "
                                       "nightly` or `varro demo` first, or check VARRO_HOME"]
    assert not db_path().exists() and not (varro_home / "data").exists()


def test_walter_reading_commands_do_not_create_a_database_either(tmp_path):
    out = invoke("walter", ["metrics", "--home", str(tmp_path / "elsewhere")])
    assert out.exit_code == 1
    assert f"no database at {tmp_path / 'elsewhere' / 'data' / 'varro.db'}" in out.output
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("app", ["varro", "walter"])
def test_a_model_folder_that_does_not_exist_is_one_line_before_any_work(varro_home, app):
    out = invoke(app, ["step", "--date", DAYS[0], "--source", "sample", "--model", "/nonexistent/folder", *TINY])
    assert out.exit_code == 1
    assert isinstance(out.exception, SystemExit)  # no traceback: the error left through the one-line path
    assert out.output.splitlines() == ["error: model folder /nonexistent/folder does not exist (from --model "
                                       "'/nonexistent/folder'); pass a folder with config.json and weights, or "
                                       "a Hugging Face id like Qwen/Qwen3-0.6B"]
    assert "Traceback" not in out.output
    assert not db_path().exists()  # it failed before the database, the ingest and the embedder


def test_a_folder_that_is_not_a_model_is_one_line_before_any_work(varro_home, tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0")
    out = invoke("varro", ["nightly", "--date", DAYS[0], "--source", "sample", "--model", str(folder), *TINY])
    assert out.exit_code == 1
    assert out.output.splitlines() == [f"error: {folder} is not a model folder: it has no config.json (make one "
                                       "with `varro tiny-model DIR` or download one with the Hugging Face CLI)"]
    assert not db_path().exists() and not run_dir("varro").exists()


def test_a_relative_model_path_is_made_absolute_from_the_callers_folder(tmp_path, monkeypatch):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    monkeypatch.setenv("VARRO_CALLER_CWD", str(tmp_path))
    cfg = load_config(None, {"model": {"model": "models/mine"}})
    assert cfg.model.model == str(tmp_path / "models" / "mine")
    assert load_config(None, {"model": {"model": "./models/mine"}}).model.model == str(tmp_path / "models" / "mine")
    assert load_config(None, {"model": {"model": "Qwen/Qwen3-0.6B"}}).model.model == "Qwen/Qwen3-0.6B"  # a hub id


def test_compare_html_and_report_are_written_where_the_command_was_started(home, tmp_path, monkeypatch):
    caller = tmp_path / "caller"
    caller.mkdir()
    monkeypatch.setenv("VARRO_CALLER_CWD", str(caller))
    out = invoke("varro", ["compare", "--home", str(home), "--run", "v", "--n", "1", "--samples", "1",
                           "--embedder", "hash", "--html", "out.html"])
    assert out.exit_code == 0, out.output
    assert (caller / "out.html").read_text().startswith("<!doctype html>")
    assert out.output.splitlines()[-1] == f"html: {caller / 'out.html'}"
    rep = invoke("varro", ["report", "--home", str(home), "--run", "v", "--html", "sub/rep.html"])
    assert rep.exit_code == 0, rep.output
    assert (caller / "sub" / "rep.html").is_file() and (caller / "sub" / "rep_files").is_dir()
    assert f"report: {caller / 'sub' / 'rep.html'}" in rep.output.splitlines()
    assert f"plots: {caller / 'sub' / 'rep_files'}" in rep.output.splitlines()


def test_rollouts_of_a_run_that_does_not_exist_name_the_runs_that_do(home):
    for app, existing in (("varro", "v"), ("walter", "w")):
        for args in (["rollouts", "--run", "nope"], ["rollouts", "list", "--run", "nope"]):
            out = invoke(app, [*args, "--home", str(home)])
            assert out.exit_code == 1, out.output
            [line] = out.output.splitlines()
            assert line.endswith(f"; the {app} runs are: {existing}") and "'nope'" in line


@pytest.mark.parametrize("app,args", [
    ("varro", ["step", "--date", "2999-01-01"]),
    ("varro", ["nightly", "--date", "2999-01-01"]),
    ("varro", ["nightly", "--from", DAYS[0], "--to", "2999-01-01"]),
    ("walter", ["step", "--date", "2999-01-01"]),
    ("walter", ["nightly", "--date", "2999-01-01"]),
])
def test_a_day_in_the_future_is_refused_in_one_line(varro_home, tiny_model_path, app, args):
    from datetime import date

    out = invoke(app, [*args, "--source", "sample", "--model", str(tiny_model_path), *TINY])
    assert out.exit_code == 1
    assert out.output.splitlines() == [f"error: 2999-01-01 is in the future (today is {date.today().isoformat()}): "
                                       "a day is run once it has begun"]
    assert not db_path().exists() and not run_dir(app).exists()


@pytest.mark.parametrize("app", ["varro", "walter"])
def test_a_day_without_data_writes_no_checkpoint_and_says_skipped(varro_home, tiny_model_path, app):
    from varro.engine.run.checkpoints import list_checkpoints

    out = invoke(app, ["nightly", "--date", "2026-11-20", "--source", "sample", "--model", str(tiny_model_path),
                       *TINY])
    assert out.exit_code == 0, out.output
    assert "skipped: no data for 2026-11-20" in out.output
    assert list_checkpoints(run_dir(app)) == []
    assert not (run_dir(app) / "checkpoints").exists()
    log = (run_dir(app) / "logs" / "2026-11-20.log").read_text()
    assert "checkpoint none" in log and "skipped: no data for 2026-11-20" in log


def test_a_hub_model_not_in_the_cache_names_the_installed_download_command(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", "from varro.engine.model.loading import load_model; load_model('acme/none')"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    tool = "hf" if (Path(sys.executable).parent / "hf").is_file() else "huggingface-cli"
    assert f"`{tool} download acme/none`" in out.stderr


def test_a_run_from_before_run_toml_is_still_refused_to_another_app(varro_home, tiny_model_path):
    """A run with Varro checkpoints and no run.toml (written before it existed): walter is refused by the
    checkpoints' owner, and no run.toml is written for walter."""
    model = ["--model", str(tiny_model_path), "--prompts-per-day", "2", *TINY]
    assert CliRunner().invoke(varro_cli, ["step", "--date", "2026-11-02", "--source", "sample", "--run", "old",
                                          *model]).exit_code == 0
    (run_dir("old") / "run.toml").unlink()
    out = CliRunner().invoke(walter_cli, ["step", "--date", "2026-11-03", "--source", "sample", "--run", "old",
                                          "--model", str(tiny_model_path), *TINY])
    assert out.exit_code == 1
    assert "run old holds varro checkpoints (latest 2026-11-02): walter cannot resume it" in out.output
    assert not (run_dir("old") / "run.toml").exists()
    again = CliRunner().invoke(varro_cli, ["step", "--date", "2026-11-03", "--source", "sample", "--run", "old"])
    assert again.exit_code == 0, again.output  # varro resumes it, settings from its checkpoint
    import tomllib

    stored = tomllib.loads((run_dir("old") / "run.toml").read_text())
    assert stored["app"] == "varro" and stored["model"] == str(tiny_model_path)
    assert stored["settings"]["varro"]["prompts_per_day"] == 2


def test_another_apps_run_and_another_base_model_are_refused(varro_home, tiny_model_path, tmp_path):
    """Regression: `walter step` on a run holding a Varro checkpoint printed 'checkpoint exists' and exited 0."""
    from varro.engine.run.checkpoints import list_checkpoints
    from varro.engine.model.tiny import write_tiny_model

    model = ["--model", str(tiny_model_path), "--prompts-per-day", "2", *TINY]
    first = CliRunner().invoke(varro_cli, ["step", "--date", "2026-11-02", "--source", "sample", "--run", "r", *model])
    assert first.exit_code == 0, first.output
    out = CliRunner().invoke(walter_cli, ["step", "--date", "2026-11-03", "--source", "sample", "--run", "r",
                                          "--model", str(tiny_model_path), *TINY])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "run r holds varro checkpoints (latest 2026-11-02): walter cannot resume it" in out.output
    other = write_tiny_model(tmp_path / "other", seed=1, vocab_size=512)
    out = CliRunner().invoke(varro_cli, ["step", "--date", "2026-11-03", "--source", "sample", "--run", "r",
                                         "--model", str(other), "--prompts-per-day", "2", *TINY])
    assert out.exit_code == 1 and "was started on base model" in out.output and str(other) in out.output
    assert [p.name for p in list_checkpoints(run_dir("r"))] == ["2026-11-02"]  # nothing was written
    again = CliRunner().invoke(varro_cli, ["step", "--date", "2026-11-03", "--source", "sample", "--run", "r", *model])
    assert again.exit_code == 0, again.output  # the run's own base resumes
