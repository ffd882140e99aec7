"""The first hour (issue 31): each wrong turn a new user met, as a test that fails without its fix.

The items that need a demo's runs (the demo's "try next" commands, `rollouts show --run`, another app's run
named, `cron --run demo`, the compare's header and HTML) are in tests/system/test_readme_commands.py, which makes
one demo home for all of them.
"""

import json
import re
from pathlib import Path

from click.testing import CliRunner

from tally.cli import cli as tally_cli
from varro.cli import cli as varro_cli
from varro.engine.loop import schedule
from varro.engine import store as dbm
from varro.engine.core.app import get_app
from varro.engine.run.checkpoints import METADATA
from varro.engine.cli.options import resolve_config
from varro.engine.core.config import Config
from varro.engine.core.paths import db_path
from varro.engine.core.paths import run_dir
from walter.cli import cli as walter_cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# the docs the README's sections moved to: every doc but the app walk-through, whose toml shows `tally = "..."`
DOCS = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))
        if p.name != "write-your-own-app.md"}
APPS = ("varro", "walter", "tally")


def fenced_lines(text: str) -> list[str]:
    """Every line inside the README's fenced blocks."""
    return [line for i, block in enumerate(text.split("```")) if i % 2 for line in block.splitlines()[1:]]


def test_readme_calls_every_command_through_scripts_env_and_says_so_first():
    """Item 1: `varro` is not on the PATH after set-up; the README says how to call it before its first example,
    and neither it nor a doc its examples moved to shows a bare command."""
    bare = [line for text in [README, *DOCS.values()] for line in fenced_lines(text) if line.split(" ", 1)[0] in APPS]
    assert bare == []
    first_use = README.index("scripts/env varro ")
    assert first_use < README.index("```bash\nscripts/env")
    assert "source .venv/bin/activate" in README[:first_use + 400]


def test_rollouts_help_names_the_apps_own_default_run():
    """Item 3: the help said `[default: default]`; the default is the app's own run."""
    for cli, app in ((varro_cli, "varro"), (walter_cli, "walter")):
        for args in (["rollouts", "--help"], ["rollouts", "list", "--help"], ["rollouts", "show", "--help"]):
            out = CliRunner().invoke(cli, args)
            assert out.exit_code == 0, out.output
            assert f"[default: {app}]" in " ".join(out.output.split()) and "default: default" not in out.output
            assert "--run" in out.output and "--home" in out.output


def test_a_relative_config_file_is_read_from_where_the_command_was_run(tmp_path, monkeypatch):
    """Item 4: scripts/env runs commands in the checkout; a relative --config is the caller's, like --model."""
    (tmp_path / "mine.toml").write_text("[train]\nlearning_rate = 0.0042\n")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("VARRO_CALLER_CWD", str(tmp_path))
    assert resolve_config({"config_file": "mine.toml"}).train.learning_rate == 0.0042


def interrupted(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_in_a_nightly_is_one_line_and_exit_130(monkeypatch, varro_home):
    """Item 5: Ctrl-C printed `FAILED: KeyboardInterrupt: ` and click's `Aborted!`, and exited 1."""
    import varro.engine.loop.cycle as cycle
    import varro.engine.loop.night as night

    monkeypatch.setattr(night, "open_run", lambda *a, **k: (Config(), [], None, None))
    monkeypatch.setattr(cycle, "step", interrupted)
    out = CliRunner().invoke(varro_cli, ["nightly", "--run", "n", "--date", "2026-11-03"])
    assert out.exit_code == 130, out.output
    assert out.output.splitlines()[-1] == "nightly n: interrupted at 2026-11-03; re-running resumes"
    assert "FAILED" not in out.output and "Aborted" not in out.output
    assert "2026-11-03: interrupted" in (run_dir("n") / "logs" / "2026-11-03.log").read_text()


def test_ctrl_c_in_any_other_command_is_one_line_and_exit_130(monkeypatch):
    import varro.engine.loop.night as night

    monkeypatch.setattr(night, "open_run", interrupted)
    out = CliRunner().invoke(varro_cli, ["step", "--date", "2026-11-03", "--source", "sample"])
    assert (out.exit_code, out.output) == (130, "interrupted; re-running resumes\n")


def fake_checkpoint(run: str, app: str, day: str = "2026-11-03") -> None:
    """A complete-looking checkpoint folder of `app`: all a run's owner is read from."""
    folder = run_dir(run) / "checkpoints" / day
    folder.mkdir(parents=True)
    (folder / METADATA).write_text(json.dumps({"app": app}))


def test_reading_another_apps_run_names_its_app_and_the_command(varro_home):
    """Item 6: `walter metrics --run demo` on a Varro run said there was no such run."""
    dbm.open_db(db_path())
    fake_checkpoint("demo", "varro")
    for args in (["metrics"], ["eval"], ["compare"], ["report"], ["rollouts"], ["rollouts", "list"]):
        out = CliRunner().invoke(walter_cli, [*args, "--run", "demo"])
        assert out.exit_code == 1
        assert out.output == (f"error: run 'demo' is a varro run, not a walter one: use `varro {' '.join(args)} "
                              "--run demo`\n")
    missing = CliRunner().invoke(walter_cli, ["metrics", "--run", "nothing"])
    assert missing.exit_code == 1 and "no walter rollouts for run 'nothing'" in missing.output


def test_an_empty_tally_items_file_is_an_error(varro_home, tmp_path):
    """Item 7: an empty items file was read as "0 items", exit 0."""
    for name, text in (("empty.jsonl", ""), ("header.csv", "group,author,text,created,saves,shares\n")):
        path = tmp_path / name
        path.write_text(text)
        out = CliRunner().invoke(tally_cli, ["ingest", "--source", "file", "--items", str(path),
                                             "--date", "2026-11-03"])
        assert out.exit_code == 1, out.output
        assert out.output == (f"error: {path} holds no items: an items file has one item a line (JSONL) or a "
                              "header and a row per item (CSV)\n")


def test_a_tally_night_past_the_look_back_names_it(varro_home):
    """Item 7: a night whose items are all older than lookback_days never said so."""
    items = ROOT / "data" / "sample" / "tally" / "items.jsonl"
    out = CliRunner().invoke(tally_cli, ["ingest", "--source", "file", "--items", str(items), "--date", "2026-11-20"])
    assert out.exit_code == 0, out.output
    app, db = get_app("tally"), dbm.open_db(db_path())
    assert app.missing_data(db, "2026-11-04", Config()) is None  # inside the look-back: a night to run
    assert app.missing_data(db, "2026-11-20", Config()) == (
        "no group has an item in the 7 days before 2026-11-20 (lookback_days = 7) that beat its author's usual; "
        "no checkpoint written")


def test_cron_names_the_run_it_schedules_even_before_it_exists(varro_home):
    """Item 8: `cron --run demo` printed the line alone."""
    out = CliRunner().invoke(varro_cli, ["cron", "--run", "fresh"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[1] == (f"# run fresh (varro) in {varro_home}: a new run; its first nightly "
                                          f"writes {run_dir('fresh') / 'run.toml'}")


def test_cron_install_without_crontab_is_one_line(varro_home, tmp_path, monkeypatch):
    """Item 8: without a crontab program --install printed `[Errno 2] ... 'crontab'`."""
    monkeypatch.setattr(schedule, "is_macos", lambda: False)
    out = CliRunner().invoke(varro_cli, ["cron", "--install"], env={"PATH": str(tmp_path)})
    assert out.exit_code == 1
    assert out.output.splitlines()[-1] == ("error: there is no `crontab` program on this machine: install cron "
                                           "(Debian: apt install cron), or give the line above to your scheduler")


def test_forecast_help_example_headline_is_in_the_sample():
    """Item 9: the example headline of `varro forecast --help` was not one of the sample's."""
    out = CliRunner().invoke(varro_cli, ["forecast", "--help"])
    example = re.search(r'--headline "([^"]+)"', " ".join(out.output.split())).group(1)
    titles = {json.loads(line)["title"] for line in (ROOT / "data" / "sample" / "headlines.jsonl").open()}
    assert example in titles


def test_readme_documents_tally_hacks_and_the_suite_time():
    """Items 10 and 11: the tally section is docs/tally.md; the suite's time stays in the README."""
    tally = DOCS["tally.md"]
    assert tally.startswith("# tally:")
    assert "tally hacks --sample" in tally
    # the figure is re-measured now and then; that it is stated, in minutes, for this machine class is the item
    assert re.search(r"about \d+ minutes on a 2-core x86 laptop-class machine \(CPU MLX\)", " ".join(README.split()))
