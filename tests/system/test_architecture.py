"""The engine/app split holds: import contracts, no app named in the engine, one error path out of a command."""

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from varro.engine.core.app import App, apps, get_app, AppError
from varro.engine.cli.commands import EngineGroup, app_cli
from varro.engine.core.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
ENGINE_COMMANDS = {"step", "nightly", "ingest", "cron", "demo", "metrics", "rollouts", "report", "compare", "eval"}


def test_import_contracts_hold():
    # the engine imports no app, apps do not import each other, no cycles between the engine's modules
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_the_engine_never_tests_an_app_by_name():
    names = sorted(apps())
    assert {"varro", "walter"} <= set(names)
    offenders = []
    for path in sorted((ROOT / "varro" / "engine").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""(app|name)\s*(==|!=|in)\s*\(?\s*["'](%s)["']""" % "|".join(names), line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


@pytest.mark.parametrize("name", ["varro", "walter"])
def test_every_app_gets_the_engine_commands_and_its_own(name):
    import importlib

    cli = importlib.import_module(f"{name}.cli").cli
    assert isinstance(cli, EngineGroup)
    assert ENGINE_COMMANDS <= set(cli.commands)
    assert {c.name for c in get_app(name).commands()} <= set(cli.commands)  # e.g. `score`


def test_an_unknown_app_is_one_line_naming_the_registered_ones():
    with pytest.raises(AppError, match=r"no application 'nope' is registered in varro.apps; registered: .*varro"):
        get_app("nope")


class _Broken(UserError):
    pass


def test_a_user_error_is_one_line_and_exit_1_anything_else_keeps_its_traceback(monkeypatch):
    import varro.engine.core.app as registry

    class Fake(App):
        name = "fake"
        title = "a test app"
        settings = type(get_app("varro").settings())
        sources = ("sample",)

    def raising(kind):
        @click.command(kind.__name__.lower())
        def cmd():
            """Raise.

            Example: fake x
            """
            raise kind("the day 2099-01-01 is not stored")

        return cmd

    apps()  # the entry points first, then the fake one for this test only
    monkeypatch.setitem(registry._REGISTERED, "fake", Fake())
    cli = app_cli(get_app("fake"), "tests.fake", extra=[raising(_Broken), raising(RuntimeError)])
    out = CliRunner().invoke(cli, ["_broken"])
    assert out.exit_code == 1
    assert out.output == "error: the day 2099-01-01 is not stored\n"
    bug = CliRunner().invoke(cli, ["runtimeerror"])
    assert bug.exit_code == 1 and isinstance(bug.exception, RuntimeError)  # not swallowed into a line


def test_every_library_error_the_cli_reports_is_a_user_error():
    from varro.engine.run.checkpoints import CheckpointError
    from varro.engine.core.errors import ConfigError
    from varro.engine.core.dates import FutureDayError
    from varro.engine.model.loading import ModelLoadError
    from varro.engine.run.identity import UnknownRunError
    from varro.engine.core.paths import NoDatabaseError
    from varro.engine.train.errors import TrainingError
    from varro.forecast.ingest import IngestError
    from walter.bsky import BlueskyError
    from walter.ingest import WalterIngestError

    for kind in (CheckpointError, ConfigError, FutureDayError, NoDatabaseError, UnknownRunError, ModelLoadError,
                 TrainingError, IngestError, BlueskyError, WalterIngestError):
        assert issubclass(kind, UserError), kind


APPS = ("varro.forecast", "varro.cli", "varro.demo", "walter", "tally")
APP_HELPERS = {"varro_app", "walter_app", "varro_step", "walter_step", "varro_day_metrics", "walter_day_metrics",
               "varro_human_items", "varro_sample_days"}  # tests/support/helpers.py functions that load an app


def app_imports(path: Path) -> list[str]:
    """The imports of a test file that reach an application: its packages, helpers that load one, or a module of
    tests/support/ that imports one (support.bluesky: walter.bsky)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith(APPS)]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(APPS):
                found.append(node.module)
            elif node.module == "support.helpers":
                found += [f"support.helpers.{a.name}" for a in node.names if a.name in APP_HELPERS]
            elif node.module.startswith("support."):
                module = ROOT / "tests" / Path(*node.module.split(".")).with_suffix(".py")
                if module.is_file() and app_imports(module):
                    found.append(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "get_app":
            found.append("get_app(...)")
    return found


def test_engine_tests_import_no_app():
    tests = sorted((ROOT / "tests" / "engine").rglob("test_*.py"))
    assert len(tests) >= 10
    offenders = {str(p.relative_to(ROOT)): app_imports(p) for p in tests if app_imports(p)}
    assert offenders == {}


def test_the_app_import_scan_sees_an_app_import(tmp_path):
    planted = tmp_path / "test_planted.py"
    planted.write_text("import os\nfrom support.helpers import tiny_config, varro_step\nfrom walter.reward import x\n"
                       "from support.toy import toy_reward\nfrom support.bluesky import fake\n")
    assert app_imports(planted) == ["support.helpers.varro_step", "walter.reward", "support.bluesky"]


def test_test_files_are_named_once_as_pytest_imports_them_by_name():
    # tests/ has no __init__.py: pytest imports each test file as a top-level module named after it, so two
    # files of one name would collide. What test files share lives in tests/support/, never in a test file.
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert len(names) >= 50 and len(names) == len(set(names))


def test_the_architecture_picture_is_the_code():
    import runpy

    drawing = runpy.run_path(str(ROOT / "scripts" / "architecture.py"))
    assert drawing["current"]() == drawing["generate"](), "run: scripts/env python scripts/architecture.py --write"


def copy_tree(tmp_path: Path) -> Path:
    import shutil

    for name in ("varro", "walter", "tally"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


@pytest.mark.parametrize("module, planted, contract", [
    ("varro/engine/core/dates.py", "from varro.engine.loop import cycle", "The engine's layers, top to bottom"),
    ("walter/reward.py", "from varro.engine.train import gspo",
     "Applications never reach into training, sampling, runs or the loop themselves"),
])
def test_a_planted_import_breaks_its_contract(tmp_path, module, planted, contract):
    tree = copy_tree(tmp_path)
    with open(tree / module, "a") as f:
        f.write(f"\n{planted}  # planted\n")
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-cache"], cwd=tree, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)})
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{contract} BROKEN" in out.stdout
    assert "The engine imports no application KEPT" in out.stdout  # it reads the copy, and reads it whole
    assert f"{module[:-3].replace('/', '.')} -> " in out.stdout  # the planted line is the one named
