"""Every command the README and its topic docs show runs, in order, on a demo's home: their code blocks are the input.

The commands are the lines of the fenced blocks that start with `scripts/env varro|walter|tally`, read from
README.md and then from each docs/*.md by name (DOCUMENTS), so a command moved from the README into a doc stays
checked; docs/write-your-own-app.md alone is left out (UNCHECKED says why).
Each runs through click's CliRunner (what scripts/env would start, without a new Python per command) with
VARRO_HOME set to one tiny demo's home, made once per session (conftest.py's `tiny_demo`, which
tests/system/test_demo.py checks too). Those that take minutes, need the network or another machine, or touch the
system are in SKIPPED with the reason; a SKIPPED entry no document shows any more fails the test, so the
list cannot drift either. The same demo's "try next" commands and the items of issue 31 that need a demo's
runs are checked here too.
"""

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from tally.cli import cli as tally_cli
from varro.cli import cli as varro_cli
from walter.cli import cli as walter_cli

ROOT = Path(__file__).resolve().parents[2]
UNCHECKED = {"write-your-own-app.md": "a walk-through on the reader's own tally file and tally run, which a demo's "
                                      "home does not have; it was never part of the README"}
# README.md first, then docs/*.md sorted by name: a fixed order, and a new doc is read without being named here
DOCUMENTS = [ROOT / "README.md"] + [p for p in sorted((ROOT / "docs").glob("*.md")) if p.name not in UNCHECKED]
CLIS = {"varro": varro_cli, "walter": walter_cli, "tally": tally_cli}
COMMAND = re.compile(r"^scripts/env (varro|walter|tally) ")
SKIPPED = {
    "scripts/env varro cron --at 03:15 --install": "installs into the user's crontab",
    "scripts/env varro ingest": "fetches the RSS feeds (network)",
    "scripts/env varro step --date 2026-11-22": "fetches the RSS feeds (network)",
    "scripts/env varro step --date 2026-11-03 --source sample --run try --model "
    "data/models/smollm2-135m-instruct": "trains a day of the real model (minutes); tests/forecast/test_varro_cycle.py runs steps",
    "scripts/env varro hacks --sample": "loads the real MiniLM and scores 15 hacks (half a minute); "
                                        "tests/system/test_hacks.py runs it",
    "scripts/env walter ingest": "searches Bluesky (network and an account)",
    "scripts/env walter step --date 2026-11-22": "searches Bluesky (network and an account)",
    "scripts/env walter demo": "the real model's demo (minutes); tests/system/test_demo.py runs it",
    "scripts/env tally demo --tiny --cold": "a demo of its own (half a minute); tests/tally/test_tally.py runs tally",
    "scripts/env tally nightly --source file --items ~/notes.csv --counts saves=1,shares=2 --group-column topic":
        "reads the reader's own file",
    "scripts/env varro nightly --hosts hosts.json": "needs several machines",
}


def readme_commands() -> list[list[str]]:
    """The commands of README.md and then of each doc in DOCUMENTS, in order, each as its words (the comment
    dropped)."""
    blocks = [block for doc in DOCUMENTS for block in doc.read_text(encoding="utf-8").split("```")[1::2]]
    return [shlex.split(line, comments=True) for block in blocks for line in block.splitlines()
            if COMMAND.match(line)]


def run(words: list[str], home: Path, cwd: Path):
    """`scripts/env APP ARGS...` as scripts/env would run it from `cwd`, on the data folder `home`."""
    assert words[0] == "scripts/env", words
    env = {"VARRO_HOME": str(home), "VARRO_CALLER_CWD": str(cwd)}
    return CliRunner().invoke(CLIS[words[1]], words[2:], env=env)


@pytest.fixture
def demo(tiny_demo):
    """A tiny demo's home (runs `demo` and `walter-demo`, two days each) and the demo's output: conftest's, made
    once per session and shared with tests/system/test_demo.py."""
    return tiny_demo


def test_every_readme_command_runs_in_order_on_the_demos_home(demo, tmp_path):
    home, _ = demo
    commands = readme_commands()
    shown = {" ".join(words) for words in commands}
    assert set(SKIPPED) <= shown, f"SKIPPED names commands no document shows any more: {set(SKIPPED) - shown}"
    ran = []
    for words in commands:
        if " ".join(words) in SKIPPED:
            continue
        out = run(words, home, tmp_path)
        assert out.exit_code == 0, f"{shlex.join(words)}\n{out.output}"
        assert out.output.strip(), shlex.join(words)
        ran.append(words[1:3])
    assert len(ran) >= 10 and ["walter", "compare"] in ran and ["varro", "rollouts"] in ran
    # what the compare example wrote, where the command was run: the headline and its summary apart (item 9)
    page = (tmp_path / "compare.html").read_text(encoding="utf-8")
    assert re.search(r"<th colspan=4>Headline: [^<]+<br>Summary: ", page)


def test_the_demo_names_its_runs_and_three_commands_that_work_as_printed(demo, tmp_path):
    """Issue 31 item 2: the demo ended without naming its runs or what to try next."""
    home, output = demo
    assert "runs: demo (Varro) and walter-demo (Walter)" in output
    tries = [line.split("#")[0].split() for line in output.splitlines() if line.startswith("  scripts/env ")]
    assert len(tries) == 3
    for words in tries:
        out = run(words, home, tmp_path)
        assert out.exit_code == 0, f"{shlex.join(words)}\n{out.output}"
        assert "run demo" in out.output or "walter-demo" in out.output or "id " in out.output


def test_rollouts_show_takes_run_after_the_subcommand(demo, tmp_path):
    """Issue 31 item 3: `rollouts show 86 --run demo` said "No such option '--run'"."""
    home, _ = demo
    out = run(["scripts/env", "varro", "rollouts", "show", "86", "--run", "demo"], home, tmp_path)
    assert out.exit_code == 0 and out.output.startswith("rollout 86  varro  run demo "), out.output
    other = run(["scripts/env", "varro", "rollouts", "show", "86", "--run", "walter-demo"], home, tmp_path)
    assert (other.exit_code, other.output) == (1, "error: rollout 86 is of run 'demo', not 'walter-demo'\n")


def test_walter_commands_on_the_demos_varro_run_name_its_app(demo, tmp_path):
    """Issue 31 item 6, on the demo's real checkpoints."""
    home, _ = demo
    out = run(["scripts/env", "walter", "eval", "--run", "demo"], home, tmp_path)
    assert (out.exit_code, out.output) == (1, "error: run 'demo' is a varro run, not a walter one: use "
                                              "`varro eval --run demo`\n")


def test_cron_on_the_demos_run_prints_its_app_home_and_state(demo, tmp_path):
    """Issue 31 item 8: `cron --run demo` printed the crontab line alone."""
    home, _ = demo
    out = run(["scripts/env", "varro", "cron", "--run", "demo"], home, tmp_path)
    line, note = out.output.splitlines()[:2]
    assert f"varro nightly --run demo --home {home} --quiet" in line
    assert note == (f"# run demo (varro) in {home}: 2 checkpoints (latest 2026-11-03) and no run.toml yet; the "
                    f"first nightly writes {home / 'runs' / 'demo' / 'run.toml'} from the latest checkpoint's "
                    "settings")


def test_compare_text_names_both_sides_first(demo, tmp_path):
    """Issue 31 item 9: the compare's text output opens with a header naming the base and the checkpoint."""
    home, _ = demo
    out = run(["scripts/env", "varro", "compare", "--run", "demo", "--n", "1"], home, tmp_path)
    assert out.exit_code == 0, out.output
    assert re.match(r"before: base +\| after: 2026-11-03\n", out.output)
